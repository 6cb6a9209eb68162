"""Judges: the chat-completions client against a loopback server, parsing, cache, aliases, local VLM plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from reca_eval.benchmarks.edit.gedit_judge import parse_viescore_reply
from reca_eval.benchmarks.edit.imgedit_judge import parse_imgedit_reply
from reca_eval.judges import backend as jb
from reca_eval.judges.cache import ResponseCache
from reca_eval.judges.openai_client import OpenAIChatBackend, openai_backend_from_env
from tests.chat_server import chat_server, image_count, prompt_text

SNAPSHOT = "gpt-4o-2024-08-06"


def _image(seed: int, size=(32, 24)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _backend(url: str, **kw) -> OpenAIChatBackend:
    return OpenAIChatBackend(
        snapshot=SNAPSHOT, base_url=url, **{"max_requests_per_s": 0, "backoff": 0.01, **kw}
    )


def test_client_sends_text_and_images_in_order_and_records_reported_model():
    def reply(payload):
        return f"{prompt_text(payload)} saw {image_count(payload)} images"

    with chat_server(reply, reported_model="gpt-4o-2024-08-06-served") as (server, url):
        judge = jb.Judge(_backend(url))
        answer = judge.ask(["hello", _image(0), _image(1)])
    assert answer.text == "hello saw 2 images"
    assert answer.model_reported == "gpt-4o-2024-08-06-served"
    sent = server.requests[0]
    assert sent["model"] == SNAPSHOT
    assert [p["type"] for p in sent["messages"][0]["content"]] == ["text", "image_url", "image_url"]
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert judge.describe()["judge_models_reported"] == ["gpt-4o-2024-08-06-served"]


def test_rate_limit_429_is_retried_with_backoff():
    calls = {"n": 0}

    def reply(payload):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}
        return "ok"

    with chat_server(reply) as (server, url):
        answer = jb.Judge(_backend(url)).ask(["x"])
    assert answer.text == "ok"
    assert len(server.requests) == 2


def test_persistent_server_errors_raise_after_retries():
    with chat_server(lambda p: (503, {"error": "down"})) as (server, url):
        with pytest.raises(jb.JudgeError, match="unavailable after 3 tries"):
            jb.Judge(_backend(url, retries=2)).ask(["x"])
    assert len(server.requests) == 3


def test_refusal_is_reported_not_scored():
    def reply(payload):
        return 200, {"model": SNAPSHOT, "choices": [{"message": {"content": None, "refusal": "I can't"}}]}

    with chat_server(reply) as (_, url):
        judge = jb.Judge(_backend(url))
        answer = judge.ask(["x"])
    assert answer.text is None and "I can't" in answer.refusal
    assert judge.describe()["judge_refused"] == 1


def test_cache_hit_on_rerun_sends_no_second_request(tmp_path):
    with chat_server(lambda p: "Prompt Compliance: 4\nVisual Naturalness: 3\nPhysical: 5") as (server, url):
        first = jb.Judge(_backend(url), ResponseCache(tmp_path))
        a = first.ask(["rubric", _image(3)])
        second = jb.Judge(_backend(url), ResponseCache(tmp_path))
        b = second.ask(["rubric", _image(3)])
        c = second.ask(["rubric", _image(4)])  # another image: another key
    assert a.text == b.text and b.cached and not a.cached
    assert len(server.requests) == 2
    assert second.describe()["judge_cache_hits"] == 1 and second.describe()["judge_requests"] == 1
    assert not c.cached


def test_cache_key_holds_snapshot_prompt_and_images(tmp_path):
    with chat_server(lambda p: "r") as (server, url):
        cache = ResponseCache(tmp_path)
        jb.Judge(_backend(url), cache).ask(["p", _image(0)])
        other = OpenAIChatBackend(snapshot="gpt-4o-2024-11-20", base_url=url, max_requests_per_s=0)
        jb.Judge(other, cache).ask(["p", _image(0)])
        jb.Judge(_backend(url), cache).ask(["q", _image(0)])
    assert len(server.requests) == 3
    entries = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert {e["model"] for e in entries} == {SNAPSHOT, "gpt-4o-2024-11-20"}


def test_floating_alias_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setenv("RECA_EVAL_JUDGE_MODEL", "gpt-4o")
    with pytest.raises(jb.JudgeError, match="floating alias"):
        openai_backend_from_env()
    assert openai_backend_from_env(allow_alias=True).snapshot == "gpt-4o"
    for pinned in ("gpt-4o-2024-08-06", "gpt-4-0613", "Qwen/Qwen2.5-VL-72B-Instruct-AWQ@c8b87d4b"):
        assert jb.is_snapshot(pinned)


def test_rate_limit_spaces_requests():
    import time

    with chat_server(lambda p: "r") as (_, url):
        judge = jb.Judge(OpenAIChatBackend(snapshot=SNAPSHOT, base_url=url, max_requests_per_s=20))
        start = time.monotonic()
        for i in range(5):
            judge.ask([f"p{i}"])
        elapsed = time.monotonic() - start
    assert elapsed >= 4 / 20 - 0.01


def test_retry_after_from_the_server_is_waited_for_else_the_backoff():
    import time

    calls = {"n": 0}

    def reply(payload):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.6"}
        if calls["n"] == 2:
            return 503, {"error": {"message": "busy"}}, {"retry-after-ms": "300"}
        if calls["n"] == 3:
            return 502, {"error": {"message": "bad gateway"}}, {}  # no Retry-After: backoff * 2**2
        return "ok"

    with chat_server(reply) as (server, url):
        start = time.monotonic()
        answer = jb.Judge(_backend(url, backoff=0.05)).ask(["x"])
        elapsed = time.monotonic() - start
    assert answer.text == "ok" and len(server.requests) == 4
    assert 0.6 + 0.3 + 0.2 <= elapsed < 5  # each wait as the server asked, then the backoff


def test_requests_run_concurrently_up_to_the_bound():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def reply(payload):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return prompt_text(payload)

    with chat_server(reply) as (server, url):
        judge = jb.Judge(_backend(url, concurrency=3))
        assert judge.concurrency == 3
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda i: judge.ask([f"p{i}"]), range(9)))
        elapsed = time.monotonic() - start
    assert [a.text for a in answers] == [f"p{i}" for i in range(9)]
    assert state["most"] == 3  # never more than the bound in flight ...
    assert elapsed < 9 * 0.3 * 0.6  # ... and not one at a time (3 waves of 0.3 s)
    assert judge.describe()["judge_requests"] == 9


def test_close_stops_the_client_loop_and_a_later_request_starts_it_again():
    with chat_server(lambda p: "ok") as (server, url):
        backend = _backend(url)
        judge = jb.Judge(backend)
        assert judge.ask(["a"]).text == "ok"
        thread = backend._runner.thread
        judge.close()
        assert not thread.is_alive() and backend._runner is None
        assert judge.ask(["b"]).text == "ok" and backend._runner.thread.is_alive()
        judge.close()
    assert len(server.requests) == 2


def test_edit_benchmark_judge_takes_its_concurrency_and_azure_options(monkeypatch):
    from reca_eval.benchmarks.edit.benchmark import make_judge

    monkeypatch.delenv("AZURE_OPENAI_DEPLOYMENT", raising=False)
    judge = make_judge({"judge_model": SNAPSHOT, "judge_concurrency": 5, "judge_cache": ""})
    assert judge.concurrency == 5 and judge.backend.azure_deployment is None
    azure = make_judge(
        {
            "judge_model": SNAPSHOT,
            "judge_base_url": "https://example-resource.openai.azure.com",
            "judge_azure_deployment": "judge-4o",
            "judge_api_version": "2024-06-01",
            "judge_cache": "",
        }
    )
    assert (azure.backend.azure_deployment, azure.backend.api_version) == ("judge-4o", "2024-06-01")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"model": SNAPSHOT, "choices": [{"message": {"content": None, "refusal": "I can't"}}]}, "refusal"),
        (
            {"model": SNAPSHOT, "choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]},
            "content_filter",
        ),
        ({"model": SNAPSHOT, "choices": []}, "malformed"),
    ],
)
def test_refusals_are_typed_errors_of_the_backend_and_counted_skips_of_the_judge(body, kind, tmp_path):
    with chat_server(lambda p: (200, body)) as (_, url):
        with pytest.raises(jb.JudgeRefusal) as info:
            _backend(url).complete(["x"])
        assert info.value.kind == kind
        judge = jb.Judge(_backend(url), ResponseCache(tmp_path))
        answer = judge.ask(["x"])
    assert answer.text is None and answer.refusal.startswith(f"{kind}: ")
    assert judge.describe()["judge_refused"] == 1


def test_content_policy_400_is_a_refusal_and_other_4xx_stop_the_run():
    policy = {"error": {"code": "content_policy_violation", "message": "rejected by the safety system"}}
    with chat_server(lambda p: (400, policy)) as (server, url):
        with pytest.raises(jb.JudgeRefusal) as info:
            _backend(url).complete(["x"])
    assert info.value.kind == "content_policy" and len(server.requests) == 1  # not retried
    with chat_server(lambda p: (401, {"error": {"message": "bad key"}})) as (server, url):
        with pytest.raises(jb.JudgeError, match="HTTP 401"):
            jb.Judge(_backend(url)).ask(["x"])
    assert len(server.requests) == 1


def test_responses_cached_under_the_existing_keys_still_hit(tmp_path):
    # The key of ["Rate this edit."] for this snapshot and the chat settings, as the cache has always
    # written it: sha256 of {model, prompt sha, image shas, settings}. A changed key would orphan every
    # cached reply of earlier scoring runs.
    key = "54b5b37256782cd250d76861fa6f5f4d34b2d37eef93af73e4db032db69bf718"
    entry = tmp_path / key[:2] / f"{key}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"text": "Score: 4", "model_reported": SNAPSHOT, "refusal": ""}))
    with chat_server(lambda p: "fresh") as (server, url):
        judge = jb.Judge(_backend(url), ResponseCache(tmp_path))
        answer = judge.ask(["Rate this edit."])
    assert answer.cached and answer.text == "Score: 4" and not server.requests
    assert judge.describe()["judge_cache_hits"] == 1


def test_azure_deployment_goes_through_the_sdks_azure_client(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    with chat_server(lambda p: "ok", reported_model="gpt-4o-2024-08-06") as (server, url):
        root = url.removesuffix("/v1")
        backend = openai_backend_from_env(
            SNAPSHOT, root, azure_deployment="judge-4o", api_version="2024-10-21"
        )
        answer = jb.Judge(backend).ask(["x"])
    assert answer.text == "ok"
    assert server.paths == ["/openai/deployments/judge-4o/chat/completions?api-version=2024-10-21"]
    assert server.headers[0]["api-key"] == "azure-key"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Brief reasoning: fine.\nPrompt Compliance: 4\nVisual Naturalness: 3\nPhysical & Detail Integrity: 5",
            [4, 3, 5],
        ),
        ("Prompt Compliance: 4\nVisual Naturalness: 3", None),  # two scores
        ("Prompt Compliance: 9\nVisual Naturalness: 3\nPhysical: 5", None),  # out of range
        ("I cannot evaluate these images.", None),
        ("", None),
    ],
)
def test_parse_imgedit_reply(text, expected):
    scores, why = parse_imgedit_reply(text)
    assert scores == expected
    assert (why == "") == (expected is not None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{\n"score" : [7, 9],\n"reasoning" : "ok"\n}', [7.0, 9.0]),
        ('||V^=^V||\n{"score": [3, 10], "reasoning": "x"}\n||V^=^V||', [3.0, 10.0]),
        ("Sure. {'score': [5, 6], 'reasoning': 'single quotes'}", [5.0, 6.0]),
        ("[6, 0]", [6.0, 0.0]),
        ('{"score": [7], "reasoning": "one"}', None),
        ('{"score": [11, 2]}', None),
        ("the image looks great", None),
    ],
)
def test_parse_viescore_reply(text, expected):
    scores, _ = parse_viescore_reply(text)
    assert scores == expected


def _tiny_qwen_vl():
    """A tiny random Qwen2.5-VL with a character tokenizer built in code: outputs are garbage by design."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    chars = sorted({chr(i) for i in range(32, 127)} | {"\n"})
    vocab = {c: i for i, c in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    chat = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}"
        "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    image_processor = transformers.Qwen2VLImageProcessor(
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = transformers.Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=transformers.Qwen2VLVideoProcessor(),
        chat_template=chat,
    )
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [0],
            "window_size": 56,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    return model, processor


def test_local_vlm_plumbing_with_tiny_random_qwen25vl(tmp_path):
    from reca_eval.benchmarks.edit.imgedit_judge import make_imgedit_scorer
    from reca_eval.judges.local_vlm import LocalVLMBackend, load_local_vlm, local_snapshot_id
    from reca_eval.judges.rubrics import IMGEDIT_TYPES, ImgEditRubrics

    model, processor = _tiny_qwen_vl()
    model.save_pretrained(tmp_path / "judge")
    processor.save_pretrained(tmp_path / "judge")
    backend = load_local_vlm(tmp_path / "judge", device="cpu", dtype="float32", max_new_tokens=6)
    assert isinstance(backend, LocalVLMBackend)
    assert backend.snapshot == local_snapshot_id(tmp_path / "judge") and backend.snapshot.startswith("judge@")

    # Prompt building: the chat template gets text and one image placeholder per image, in order.
    messages, images = backend.messages(["Rate this:", _image(0), _image(1), "done"])
    assert [p["type"] for p in messages[0]["content"]] == ["text", "image", "image", "text"]
    assert len(images) == 2
    seen = {}
    original_generate = backend.model.generate

    def spy_generate(**inputs):
        seen.update(inputs)
        return original_generate(**inputs)

    backend.model.generate = spy_generate
    reply = backend.complete(["Rate this:", _image(0), _image(1)])
    assert isinstance(reply.text, str) and reply.model_reported == backend.snapshot
    assert seen["image_grid_thw"].shape[0] == 2  # both images reached the model
    assert seen["do_sample"] is False and seen["max_new_tokens"] == 6

    # Garbage replies are counted as unparseable skips, never scores.
    rubrics = ImgEditRubrics({t: "Judge: <edit_prompt>" for t in IMGEDIT_TYPES}, "inline", "0")
    judge = jb.Judge(backend, ResponseCache(tmp_path / "cache"))
    source = tmp_path / "src.png"
    _image(5).save(source)
    row = make_imgedit_scorer(judge, rubrics)(
        {"item_id": "1", "category": "add", "instruction": "add a cat", "source_path": str(source)}, _image(6)
    )
    assert row[jb.SKIP_COLUMN].startswith("unparseable judge reply")
    assert np.isnan(row["score"])
    assert judge.describe()["judge_unparseable"] == 1
