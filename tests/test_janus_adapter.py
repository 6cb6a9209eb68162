"""The Janus adapter on tiny random Janus models built in code (no downloads; seconds on a CPU)."""

from __future__ import annotations

import copy
import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from transformers import JanusForConditionalGeneration  # noqa: E402

from reca_eval.models.janus.adapter import JanusAdapter  # noqa: E402
from reca_eval.models.janus.tiny import build_tiny_janus, tiny_janus_config  # noqa: E402
from reca_eval.models.loading import detect_family, load_unified_model  # noqa: E402
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig, UnifiedModel  # noqa: E402
from reca_eval.models.sampling import cache_keyword  # noqa: E402

INSTRUCTION = "Describe the image in detail."
CAPTIONS = ["a red circle", "two blue squares left of a green star"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: threading costs more than it gains, and the 2 cores are shared with other tests.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _adapter(seed: int = 1, condition_on: str = "understanding") -> JanusAdapter:
    model, processor = build_tiny_janus(seed)
    return JanusAdapter(model, processor, condition_on=condition_on)


def _pixels(seed: int, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) * 2 - 1


def _reca_conditions(adapter: JanusAdapter, pixels: torch.Tensor) -> list[Condition]:
    feats = adapter.understanding_embeddings(pixels)
    return [Condition([INSTRUCTION, ImageEmbeds(f)]) for f in feats]


def _train(adapter: JanusAdapter, conditions, targets, steps: int, lr: float = 5e-3) -> list[float]:
    adapter.train()
    opt = torch.optim.Adam(adapter.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = adapter("generation", conditions=conditions, targets=targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    adapter.eval()
    return losses


@pytest.fixture(scope="module")
def trained():
    """A tiny Janus overfitted on one RecA batch (one image-conditioned and one text-conditioned example),
    so its greedy samples vary token to token and depend on the whole context."""
    adapter = _adapter(seed=1)
    pixels = _pixels(0)
    targets = adapter.generation_targets(pixels)
    conditions = [_reca_conditions(adapter, pixels)[0], Condition.text(CAPTIONS[1])]
    losses = _train(adapter, conditions, targets, steps=150)
    return adapter, conditions, targets, losses


# ------------------------------------------------------------------------------------ losses


def test_adapter_satisfies_protocol_and_shapes():
    adapter = _adapter()
    assert isinstance(adapter, UnifiedModel)
    pixels = _pixels(0)
    feats = adapter.understanding_embeddings(pixels)
    targets = adapter.generation_targets(pixels)
    assert feats.shape == (2, adapter.num_image_tokens, adapter.hidden_size)
    assert not feats.requires_grad
    assert targets.shape == (2, adapter.num_image_tokens) and targets.dtype == torch.long
    assert 0 <= int(targets.min()) and int(targets.max()) < adapter.codebook_size
    # decoding the targets gives images of the model's size
    images = adapter.decode_images(targets)
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_generation_loss_at_init_is_log_codebook_size():
    # The head's last layer is initialised N(0, 0.02^2): logits have std ~0.1, and CE of such
    # near-uniform logits exceeds ln(V) by ~var/2 ~ 0.005 nats, so 0.05 is a loose but telling bound
    # (a wrong target alignment or an unmasked pad would not move it; a wrong head or vocabulary would).
    adapter = _adapter()
    pixels = _pixels(0)
    loss = adapter.generation_loss(_reca_conditions(adapter, pixels), adapter.generation_targets(pixels))
    assert abs(loss.item() - math.log(adapter.codebook_size)) < 0.05


def test_generation_loss_overfits_one_batch(trained):
    _, _, _, losses = trained
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_image_embeds_segments_change_the_loss():
    adapter = _adapter()
    pixels = _pixels(0)
    targets = adapter.generation_targets(pixels)
    feats = adapter.understanding_embeddings(pixels)
    with_image = adapter.generation_loss([Condition([INSTRUCTION, ImageEmbeds(f)]) for f in feats], targets)
    other_image = adapter.generation_loss(
        [Condition([INSTRUCTION, ImageEmbeds(f)]) for f in feats.flip(0)], targets
    )
    text_only = adapter.generation_loss([Condition([INSTRUCTION])] * 2, targets)
    assert with_image.item() != other_image.item()
    assert with_image.item() != text_only.item()
    # image segments can come first, last or several times
    two_images = Condition([ImageEmbeds(feats[0]), "and", ImageEmbeds(feats[1])])
    assert torch.isfinite(adapter.generation_loss([two_images], targets[:1]))


def test_batch_with_different_condition_lengths_equals_per_example():
    adapter = _adapter()
    pixels = _pixels(3, n=3)
    targets = adapter.generation_targets(pixels)
    feats = adapter.understanding_embeddings(pixels)
    conditions = [
        Condition(["red"]),
        Condition([INSTRUCTION, ImageEmbeds(feats[1])]),
        Condition(["two blue squares left of a green star and a small red circle below"]),
    ]
    lengths = {adapter.embed_condition(c).shape[0] for c in conditions}
    assert len(lengths) == 3  # the batch really is ragged
    batched = adapter.image_token_logits(conditions, targets)
    for i, cond in enumerate(conditions):
        single = adapter.image_token_logits([cond], targets[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)
    # and padding never leaks NaNs into the gradients
    adapter.generation_loss(conditions, targets).backward()
    assert all(torch.isfinite(p.grad).all() for p in adapter.parameters() if p.grad is not None)


def test_a_batch_of_new_prompts_is_tokenised_in_one_call_with_the_single_prompt_ids(monkeypatch):
    adapter, reference = _adapter(), _adapter()
    feats = adapter.understanding_embeddings(_pixels(4, n=1))[0]
    conditions = [Condition([c]) for c in CAPTIONS + ["three green stars"]] + [
        Condition([INSTRUCTION, ImageEmbeds(feats)]),
        Condition(["a red circle"]),  # a repeat within the batch
        Condition([]),
    ]
    tokenizer = adapter.processor.tokenizer
    calls = []
    original = type(tokenizer).__call__

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    rows = adapter._condition_rows(conditions)
    assert len(calls) == 1 and len(calls[0]) == 5  # five distinct prompts (the empty one renders too)
    adapter._condition_rows(conditions)
    assert len(calls) == 1  # all memoised now
    monkeypatch.undo()
    singles = [reference._condition_row(c) for c in conditions]  # one prompt per tokenizer call
    assert [r.ids for r in rows] == [r.ids for r in singles]
    assert [r.content for r in rows] == [r.content for r in singles]


def test_understanding_loss_finite_and_decreasing():
    adapter = _adapter()
    pixels = _pixels(5)
    adapter.train()
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = adapter("understanding", pixel_values=pixels, texts=CAPTIONS)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses[::5]


def test_understanding_loss_depends_on_the_image_and_rejects_bad_input():
    adapter = _adapter()
    pixels = _pixels(5)
    a = adapter.understanding_loss(pixels, CAPTIONS)
    b = adapter.understanding_loss(pixels.flip(0), CAPTIONS)
    assert a.item() != b.item()
    with pytest.raises(ValueError, match="empty"):
        adapter.understanding_loss(pixels, ["a red circle", "  "])
    with pytest.raises(ValueError, match="2 image"):
        adapter.understanding_loss(pixels, CAPTIONS[:1])
    # an answer that spells the image token would shift every image embedding into the wrong slot
    with pytest.raises(ValueError, match="image-token positions"):
        adapter.understanding_loss(pixels, ["a red circle", "a <image_placeholder> square"])


def test_empty_condition_is_the_cfg_unconditional_input():
    adapter = _adapter()
    ids = adapter._ids
    null = adapter.embed_condition(Condition([]))
    expected = [ids["bos"]] + [ids["pad"]] * (null.shape[0] - 2) + [ids["boi"]]
    torch.testing.assert_close(null, adapter._embed_ids(expected))
    # CFG's unconditional branch keeps the conditional layout: same length, only BOS and BOI survive
    cond = Condition([INSTRUCTION, ImageEmbeds(adapter.understanding_embeddings(_pixels(0))[0])])
    full, uncond = adapter.embed_condition(cond), adapter.embed_condition(cond, unconditional=True)
    assert uncond.shape == full.shape
    torch.testing.assert_close(uncond[1:-1], adapter._embed_ids([ids["pad"]] * (full.shape[0] - 2)))
    torch.testing.assert_close(uncond[[0, -1]], full[[0, -1]])


def test_bad_conditions_and_targets_raise_clear_errors():
    adapter = _adapter()
    targets = adapter.generation_targets(_pixels(0))
    with pytest.raises(ValueError, match="codebook"):
        adapter.generation_loss([Condition.text("a")] * 2, targets + adapter.codebook_size)
    with pytest.raises(ValueError, match="1 condition"):
        adapter.generation_loss([Condition.text("a")], targets)
    with pytest.raises(ValueError, match="condition 1: ImageEmbeds must be"):
        adapter.generation_loss([Condition.text("a"), Condition([ImageEmbeds(torch.zeros(4, 7))])], targets)
    with pytest.raises(ValueError, match="image segment"):
        adapter.generation_loss([Condition.text("a <image_placeholder>")] * 2, targets)
    with pytest.raises(TypeError, match="segment 0"):
        adapter.generation_loss([Condition([3])] * 2, targets)
    with pytest.raises(ValueError, match="objective"):
        adapter("reconstruction")


# ---------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_teacher_forcing_equals_sampling_loop(trained, guidance_scale):
    adapter, conditions, _, _ = trained
    greedy = SamplingConfig(guidance_scale=guidance_scale, top_k=1)
    sampled = adapter.sample_image_tokens(conditions, greedy)
    assert len(set(sampled[0].tolist())) > 2  # not a degenerate constant sequence
    forced = adapter.image_token_logits(conditions, sampled, guidance_scale=guidance_scale)
    assert torch.equal(forced.argmax(-1), sampled)


def test_sampling_loop_without_a_working_cache_diverges(trained):
    # What an ignored cache keyword does (transformers 5.23 swallows unknown keywords): each step would
    # see only its own token. The equality test above must be able to notice that.
    adapter, conditions, _, _ = trained
    broken = copy.copy(adapter)
    broken._cache_keyword = "cache_that_does_not_exist"
    greedy = SamplingConfig(guidance_scale=1.0, top_k=1)
    try:
        tokens = broken.sample_image_tokens(conditions, greedy)
    except TypeError:
        return  # rejecting the keyword outright is also a loud failure
    assert not torch.equal(tokens, adapter.sample_image_tokens(conditions, greedy))


def test_cache_keyword_follows_the_signature():
    adapter = _adapter()
    assert cache_keyword(adapter.model.model.language_model) in ("cache", "past_key_values")

    class Old(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs):
            return inputs_embeds

    class Unknown(torch.nn.Module):
        def forward(self, inputs_embeds=None, **kwargs):
            return inputs_embeds

    assert cache_keyword(Old()) == "past_key_values"
    with pytest.raises(TypeError, match="Unknown.forward"):
        cache_keyword(Unknown())


def test_sampling_matches_transformers_builtin_generate(trained):
    # For a text prompt, Janus's own generate(generation_mode="image") is the reference: same prompt
    # layout, same pad-filled unconditional branch, same CFG formula.
    adapter, _, _, _ = trained
    processor = adapter.processor
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": CAPTIONS[1]}]}], add_generation_prompt=True
    )
    inputs = processor(text=[prompt], generation_mode="image", return_tensors="pt")
    reference = adapter.model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=3.0)
    ours = adapter.sample_image_tokens(
        [Condition.text(CAPTIONS[1])], SamplingConfig(guidance_scale=3.0, top_k=1)
    )
    assert torch.equal(ours, reference)


def test_batched_sampling_equals_per_example(trained):
    adapter, conditions, _, _ = trained
    greedy = SamplingConfig(guidance_scale=3.0, top_k=1)
    batched = adapter.sample_image_tokens(conditions, greedy)
    for i, cond in enumerate(conditions):
        assert torch.equal(batched[i : i + 1], adapter.sample_image_tokens([cond], greedy))
    # stochastic sampling: image i uses seed + i, whatever its batch-mates
    sampling = SamplingConfig(guidance_scale=3.0, temperature=1.0, top_p=0.9, seed=7)
    batched = adapter.sample_image_tokens(conditions, sampling)
    second = adapter.sample_image_tokens(
        [conditions[1]], SamplingConfig(guidance_scale=3.0, top_p=0.9, seed=8)
    )
    assert torch.equal(batched[1:], second)


def test_an_image_depends_on_its_seed_not_its_batch(trained):
    # Ragged prompts (left padding differs with the batch), an image condition, one seed per image:
    # every image must come out the same whatever batch it is sampled in and in which order.
    adapter, conditions, _, _ = trained
    mixed = [
        conditions[0],
        Condition.text("a red circle"),
        conditions[1],
        Condition.text(CAPTIONS[1] + " now"),
    ]
    seeds = [101, 202, 303, 404]

    def sample(idx: list[int]) -> torch.Tensor:
        config = SamplingConfig(guidance_scale=3.0, temperature=1.0, seeds=[seeds[i] for i in idx])
        return adapter.sample_image_tokens([mixed[i] for i in idx], config)

    together = sample([0, 1, 2, 3])
    assert torch.equal(torch.cat([sample([0]), sample([1, 2]), sample([3])]), together)
    assert torch.equal(sample([3, 2, 1, 0]).flip(0), together)
    assert not torch.equal(together[0], sample([0, 1])[1])  # another prompt and seed: another image


def test_generate_with_image_condition_is_seeded_pil():
    adapter = _adapter()
    conditions = _reca_conditions(adapter, _pixels(0))
    sampling = SamplingConfig(guidance_scale=2.0, temperature=1.0, top_k=20, seed=3)
    images = adapter.generate(conditions, sampling)
    assert len(images) == 2 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in images)
    again = adapter.sample_image_tokens(conditions, sampling)
    assert torch.equal(again, adapter.sample_image_tokens(conditions, sampling))
    other = adapter.sample_image_tokens(conditions, SamplingConfig(guidance_scale=2.0, top_k=20, seed=4))
    assert not torch.equal(again, other)
    with pytest.raises(ValueError, match="top_p"):
        adapter.generate(conditions, SamplingConfig(top_p=1.5))


# ------------------------------------------------------------------------ save / load / misc


def test_save_then_plain_from_pretrained_gives_identical_outputs(trained, tmp_path):
    adapter, conditions, targets, _ = trained
    out = tmp_path / "ckpt"
    adapter.save_pretrained(out)
    adapter.save_pretrained(out)  # overwriting an existing checkpoint swaps it in whole
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() and (out / "processor_config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    plain = JanusForConditionalGeneration.from_pretrained(out).eval()
    ids = torch.tensor([[0, 5, 9, 11, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, adapter.model(input_ids=ids).logits, atol=0, rtol=0
        )

    reloaded = load_unified_model(out)
    assert isinstance(reloaded, JanusAdapter) and reloaded.family == "janus"
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.image_token_logits(conditions, targets), adapter.image_token_logits(conditions, targets)
        )
    greedy = SamplingConfig(guidance_scale=3.0, top_k=1)
    assert torch.equal(
        reloaded.sample_image_tokens(conditions, greedy), adapter.sample_image_tokens(conditions, greedy)
    )


def test_vq_embedding_condition_ablation():
    adapter = _adapter(condition_on="vq_embeddings")
    pixels = _pixels(0)
    feats = adapter.condition_features(pixels)
    expected = adapter.model.prepare_embeddings_for_image_generation(adapter.generation_targets(pixels))
    assert feats.shape == (2, adapter.num_image_tokens, adapter.hidden_size)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(adapter.vq_condition_embeddings(pixels), expected)
    understanding = adapter.understanding_embeddings(pixels)  # never switched by condition_on
    assert not torch.allclose(feats, understanding)
    torch.testing.assert_close(
        _adapter(condition_on="understanding").condition_features(pixels), understanding
    )
    with pytest.raises(ValueError, match="condition_on"):
        _adapter(condition_on="pixels")


def test_preprocess_normalises_like_janus_pro():
    adapter = _adapter()
    pixels = adapter.preprocess([Image.new("RGB", (32, 32), (255, 255, 255)), Image.new("L", (64, 16), 0)])
    assert pixels.shape == (2, 3, 32, 32)
    assert torch.allclose(pixels[0], torch.ones_like(pixels[0]))  # (1 - 0.5) / 0.5
    assert pixels[1].min().item() == pytest.approx(-1.0)  # black content, letterboxed to a square


def test_trainable_modules_cover_the_model():
    adapter = _adapter()
    modules = adapter.trainable_modules()
    assert {
        "language_model",
        "generation_head",
        "generation_embeddings",
        "aligner",
        "vision",
        "vqmodel",
    } <= set(modules)
    covered = {id(p) for m in modules.values() for p in m.parameters()}
    assert covered == {id(p) for p in adapter.model.parameters()}


def test_tiny_model_is_tiny_and_grids_agree():
    model, processor = build_tiny_janus(0)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    vision = model.config.vision_config
    assert model.config.vq_config.num_patches == vision.image_size // vision.patch_size
    with pytest.raises(ValueError, match="power of two"):
        tiny_janus_config(vocab_size=50, patch_size=6)
    # same seed, same weights
    again, _ = build_tiny_janus(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_detect_family_and_its_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download deepseek-community/Janus-Pro-1B"):
        detect_family(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        detect_family(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'llava'"):
        detect_family(tmp_path)
    (tmp_path / "config.json").write_text("{\n  not json")
    with pytest.raises(ValueError, match="line 2"):
        detect_family(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": []}))
    with pytest.raises(ValueError, match="no 'model_type'"):
        detect_family(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "janus"}))
    assert detect_family(tmp_path) == "janus"


def test_ragged_batches_sample_the_same_under_eager_attention(trained):
    """A checkpoint whose config picks eager attention: the padding mask is added to the scores, so it
    must be an additive mask there (a boolean would add 0 or 1 and let padding be attended)."""
    adapter, conditions, _, _ = trained
    mixed = [conditions[0], Condition.text("a red circle"), Condition.text(CAPTIONS[1] + " now")]
    config = SamplingConfig(guidance_scale=3.0, top_k=1)
    lm_config = adapter.model.model.language_model.config
    sdpa = adapter.sample_image_tokens(mixed, config)
    before = lm_config._attn_implementation
    try:
        lm_config._attn_implementation = "eager"
        eager = adapter.sample_image_tokens(mixed, config)
        alone = adapter.sample_image_tokens([mixed[1]], config)
    finally:
        lm_config._attn_implementation = before
    assert torch.equal(eager[1:2], alone)  # padding in the batch changes nothing
    assert (eager == sdpa).float().mean() > 0.9  # the same model: greedy tokens agree up to float order
