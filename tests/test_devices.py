"""Defect 6: one device rule for every neural scorer. CUDA when torch sees it, else the CPU with a
warning stating the expected time; `-o device=` overrides; a named CUDA device that is not there is an
error. CUDA's presence is monkeypatched (these tests never touch a GPU)."""

from __future__ import annotations

import types
import warnings

import pytest

torch = pytest.importorskip("torch")

from reca_eval.core import devices  # noqa: E402


@pytest.fixture(params=[True, False], ids=["cuda", "no-cuda"])
def cuda(request, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def test_the_rule(cuda):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = devices.scoring_device(None, what="X", count=2212, cpu_seconds_each=27.0)
    assert chosen == ("cuda" if cuda else "cpu")
    if cuda:
        assert not caught
    else:
        (message,) = [str(w.message) for w in caught]
        # 2,212 GenEval images at 27 s each: the expected time is stated, in hours.
        assert "2212 image(s)" in message and "16.6 h" in message and "-o device=cuda" in message
    assert devices.scoring_device("cpu", what="X", count=1, cpu_seconds_each=1) == "cpu"
    if cuda:
        assert devices.scoring_device("cuda:1", what="X", count=1, cpu_seconds_each=1) == "cuda:1"
    else:
        with pytest.raises(ValueError, match="no CUDA device"):
            devices.scoring_device("cuda", what="X", count=1, cpu_seconds_each=1)


def _weights(tmp_path):
    detector, clip = tmp_path / "detector.pth", tmp_path / "clip.bin"
    detector.write_bytes(b"detector")
    clip.write_bytes(b"clip")
    return {"detector_weights": str(detector), "clip_weights": str(clip)}


def test_geneval_scores_on_cuda_when_available_else_cpu_with_an_estimate(cuda, tmp_path, monkeypatch):
    from reca_eval.benchmarks.geneval import benchmark
    from reca_eval.scorers import clip_colour, mask2former

    loaded = {}
    monkeypatch.setattr(
        mask2former, "load_detector", lambda path, device, **kw: loaded.setdefault("det", device)
    )
    monkeypatch.setattr(
        clip_colour,
        "load_colour_classifier",
        lambda *a, device, precision, **kw: loaded.setdefault(
            "clip", types.SimpleNamespace(precision=precision)
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        *_, scorer = benchmark._geneval_backend(_weights(tmp_path), n_images=2212)
    expected = "cuda" if cuda else "cpu"
    assert loaded["det"] == expected and scorer["device"] == expected
    messages = [str(w.message) for w in caught]
    assert bool(messages) is not cuda
    if not cuda:
        assert "GenEval" in messages[0] and "2212 image(s)" in messages[0]
    # -o device=cpu overrides, with no warning.
    loaded.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        benchmark._geneval_backend({**_weights(tmp_path), "device": "cpu"}, n_images=10)
    assert loaded["det"] == "cpu" and not caught


@pytest.mark.parametrize("scorer", ["dpg-vqa", "edit-judge"])
def test_local_vqa_and_judge_follow_the_same_rule(cuda, tmp_path, monkeypatch, scorer):
    from reca_eval.judges import local_vlm

    seen = {}

    def fake_load(path, *, device, **kwargs):
        seen["device"] = device
        raise RuntimeError("loaded")  # stop before any model is needed

    monkeypatch.setattr(local_vlm, "load_local_vlm", fake_load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="loaded"):
            if scorer == "dpg-vqa":
                from reca_eval.scorers.vqa import make_vqa

                make_vqa({"vqa": "local", "vqa_model_path": str(tmp_path)}, calls=500)
            else:
                from reca_eval.benchmarks.edit.benchmark import make_judge

                make_judge({"judge": "local", "judge_model_path": str(tmp_path)}, calls=500)
    assert seen["device"] == ("cuda" if cuda else "cpu")
    messages = [str(w.message) for w in caught]
    assert bool(messages) is not cuda
    if not cuda:
        assert "500 " in messages[0] and "4.2 h" in messages[0]


def test_generation_device_and_dtype_follow_the_rule(cuda):
    from reca_eval.evaluation.generate import resolve_generation
    from reca_eval.models.janus.adapter import JanusAdapter

    base = JanusAdapter.shipped_base_path()
    settings = resolve_generation(base)
    assert (settings["device"], settings["dtype"]) == (("cuda", "bfloat16") if cuda else ("cpu", "float32"))
    assert resolve_generation(base, device="cpu", dtype="float16")["dtype"] == "float16"
    if not cuda:
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_generation(base, device="cuda")
