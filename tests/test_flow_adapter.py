"""The flow-matching composite (Qwen2.5-VL + queries + connector + Sana DiT + DC-AE) on a tiny random config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reca_eval.models.flow.adapter import FlowAdapter, sample_sigmas
from reca_eval.models.flow.tiny import build_tiny_flow
from reca_eval.models.loading import detect_family, load_unified_model
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig, UnifiedModel

TRAINABLE = ("queries.", "connector.", "transformer.")
FROZEN = ("vlm.", "vae.")


def images(count: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        arr = np.zeros((size, size, 3), np.uint8)
        arr[:] = rng.integers(0, 255, 3)
        x0, y0 = rng.integers(0, size // 2, 2)
        arr[y0 : y0 + size // 2, x0 : x0 + size // 2] = rng.integers(0, 255, 3)
        out.append(Image.fromarray(arr))
    return out


def reca_batch(model, count: int = 2):
    px = model.preprocess(images(count))
    feats = model.understanding_embeddings(px)
    targets = model.generation_targets(px)
    conditions = [Condition(["describe the image in detail .", ImageEmbeds(f)]) for f in feats]
    return conditions, targets


def test_is_a_unified_model_with_latent_targets():
    model = build_tiny_flow()
    assert isinstance(model, UnifiedModel) and isinstance(model, torch.nn.Module)
    px = model.preprocess(images(2))
    assert px.shape == (2, 3, 32, 32) and float(px.min()) >= -1 and float(px.max()) <= 1
    feats = model.understanding_embeddings(px)
    # 16-px understanding view, 4-px patches merged 2x2 -> 2x2 = 4 tokens in the VLM's hidden size
    assert feats.shape == (2, 4, model.hidden_size) and not feats.requires_grad
    assert model.generation_targets(px).shape == (2, 8, 8, 8)


def test_loss_is_finite_and_falls_on_an_overfit_batch():
    model = build_tiny_flow(seed=1)
    conditions, targets = reca_batch(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)

    def probe() -> float:
        # Same timesteps and noise each time, so the numbers compare.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            return float(
                np.mean(
                    [model("generation", conditions=conditions, targets=targets).item() for _ in range(2)]
                )
            )

    model.train()
    before = probe()
    for _ in range(20):
        loss = model("generation", conditions=conditions, targets=targets)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = probe()
    assert np.isfinite(before) and after < 0.8 * before, (before, after)


def test_gradients_reach_exactly_the_trainable_parts():
    model = build_tiny_flow()
    conditions, targets = reca_batch(model)
    model("generation", conditions=conditions, targets=targets).backward()
    for name, p in model.named_parameters():
        if name.startswith(FROZEN):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert name.startswith(TRAINABLE), name
    reached = {
        n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert reached == {"queries", "connector", "transformer"}
    # the queries learn through the frozen VLM
    assert model.queries.weight.grad.abs().sum() > 0
    # the frozen parts stay in eval mode even when the model is put in training mode
    model.train()
    assert not model.vlm.training and not model.vae.training and model.transformer.training


def test_condition_never_sees_the_target_latents():
    model = build_tiny_flow()
    conditions, targets = reca_batch(model)
    seen: list[dict] = []
    handle = model.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(
            {k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)}
        ),
        with_kwargs=True,
    )
    perturbed = targets + 3.0 * torch.randn_like(targets)
    for t in (targets, perturbed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            model.generation_loss(conditions, t)
    handle.remove()
    assert torch.equal(seen[0]["encoder_hidden_states"], seen[1]["encoder_hidden_states"])
    assert not torch.equal(seen[0]["hidden_states"], seen[1]["hidden_states"])  # the targets did change
    # and the condition embeddings do depend on the condition
    other = model.condition_embeddings([Condition(["a red circle"])] * 2)
    assert not torch.allclose(other, seen[0]["encoder_hidden_states"])


def test_sampling_gives_right_size_and_is_seeded():
    model = build_tiny_flow()
    feats = model.understanding_embeddings(model.preprocess(images(1)))
    conditions = [
        Condition.text("a red circle"),
        Condition(["reconstruct", ImageEmbeds(feats[0])]),
        Condition([]),
    ]
    first = model.generate(conditions, SamplingConfig(guidance_scale=3.0, seed=5))
    assert [im.size for im in first] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in first)
    again = model.generate(conditions, SamplingConfig(guidance_scale=3.0, seed=5))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True))
    other = model.generate(conditions, SamplingConfig(guidance_scale=3.0, seed=6))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))
    # image i depends on seed + i only, not on its batch-mates
    alone = model.sample_latents(conditions[1:2], SamplingConfig(guidance_scale=3.0, seed=6))
    batched = model.sample_latents(conditions[:2], SamplingConfig(guidance_scale=3.0, seed=5))
    assert torch.allclose(alone[0], batched[1], atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = build_tiny_flow(seed=3)
    with torch.no_grad():
        model.queries.weight.add_(0.5)  # trained-looking values must survive the round trip
    model.save_pretrained(tmp_path / "ckpt")
    for part in ("vlm", "transformer", "vae", "scheduler"):
        assert (tmp_path / "ckpt" / part).is_dir()
    assert detect_family(tmp_path / "ckpt") == "flow"
    loaded = load_unified_model(tmp_path / "ckpt")
    assert isinstance(loaded, FlowAdapter)
    conditions = [Condition.text("a red circle"), Condition([])]
    assert torch.allclose(
        model.condition_embeddings(conditions), loaded.condition_embeddings(conditions), atol=1e-6
    )
    sampling = SamplingConfig(guidance_scale=2.0, seed=1)
    assert torch.allclose(
        model.sample_latents(conditions, sampling), loaded.sample_latents(conditions, sampling), atol=1e-5
    )
    px = model.preprocess(images(1))
    assert torch.allclose(model.generation_targets(px), loaded.generation_targets(px), atol=1e-6)
    # saving over an existing checkpoint replaces it whole
    loaded.save_pretrained(tmp_path / "ckpt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_timestep_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    uniform = sample_sigmas(4000, "uniform", generator=g)
    logit = sample_sigmas(4000, "logit_normal", generator=g)
    shifted = sample_sigmas(4000, "logit_normal", shift=3.0, generator=g)
    assert 0 < float(uniform.min()) and float(uniform.max()) < 1
    assert abs(float(uniform.mean()) - 0.5) < 0.03 and abs(float(logit.mean()) - 0.5) < 0.03
    assert float(logit.std()) < float(uniform.std())  # logit-normal concentrates mid-range
    assert float(shifted.mean()) > 0.6  # a shift > 1 moves mass to high noise
    with pytest.raises(ValueError, match="timestep_sampling"):
        sample_sigmas(2, "cosine")
    with pytest.raises(ValueError, match="timestep_sampling"):
        build_tiny_flow(timestep_sampling="cosine")


def test_bad_inputs_get_clear_errors():
    model = build_tiny_flow()
    conditions, targets = reca_batch(model)
    with pytest.raises(ValueError, match="latent channels"):
        model.generation_loss(conditions, targets[:, :4])
    with pytest.raises(ValueError, match="2 condition"):
        model.generation_loss(conditions, targets[:1])
    with pytest.raises(ValueError, match="segment 1"):
        model.condition_embeddings([Condition(["x", ImageEmbeds(torch.zeros(4, 7))])])
    with pytest.raises(ValueError, match="square"):
        model.condition_embeddings([Condition([ImageEmbeds(torch.zeros(3, model.hidden_size))])])
    with pytest.raises(ValueError, match="objective"):
        model("sft")
    with pytest.raises(NotImplementedError, match="frozen"):
        model("understanding", pixel_values=None, texts=[])
