"""Qwen-Image-Edit (QwenImageEditPipeline parts) behind the UnifiedModel protocol, on a tiny random config."""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch
from diffusers import QwenImageEditPipeline
from PIL import Image

from reca_eval.models.flow.tiny import build_tiny_qwen_image_edit
from reca_eval.models.loading import detect_family, load_unified_model
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig, UnifiedModel
from reca_eval.models.qwen_image_edit.adapter import QwenImageEditAdapter

EDIT_MODULE = "diffusers.pipelines.qwenimage.pipeline_qwenimage_edit"


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
    conditions = [Condition(["describe the image .", ImageEmbeds(f)]) for f in feats]
    return conditions, model.generation_targets(px)


def record_transformer_inputs(model) -> tuple[list[dict], torch.utils.hooks.RemovableHandle]:
    seen: list[dict] = []

    def hook(module, args, kwargs):
        seen.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})

    return seen, model.transformer.register_forward_pre_hook(hook, with_kwargs=True)


def test_protocol_shapes():
    model = build_tiny_qwen_image_edit()
    assert isinstance(model, UnifiedModel)
    px = model.preprocess(images(2))
    assert model.understanding_embeddings(px).shape == (2, 4, model.hidden_size)
    assert model.generation_targets(px).shape == (2, 4, 8, 8)  # z_dim 4, VAE factor 4


def test_reca_loss_passes_no_reference_latents_and_ignores_target_values():
    model = build_tiny_qwen_image_edit()
    conditions, targets = reca_batch(model)
    seen, handle = record_transformer_inputs(model)
    for t in (targets, targets + 3.0 * torch.randn_like(targets)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            model.generation_loss(conditions, t)
    handle.remove()
    side = targets.shape[-1]
    for call in seen:
        # only the noisy target's own packed tokens, and one image shape per sample: no reference image
        assert call["hidden_states"].shape[1] == (side // 2) ** 2
        assert all(len(shapes) == 1 for shapes in call["img_shapes"])
    assert torch.equal(seen[0]["encoder_hidden_states"], seen[1]["encoder_hidden_states"])
    assert not torch.equal(seen[0]["hidden_states"], seen[1]["hidden_states"])


def test_editing_keeps_the_pipelines_reference_latents():
    model = build_tiny_qwen_image_edit()
    seen, handle = record_transformer_inputs(model)
    # The pipeline reads the source at ~1024^2 pixels; shrink that so the tiny model edits in seconds.
    with mock.patch(f"{EDIT_MODULE}.calculate_dimensions", return_value=(32, 32, None)):
        edited = model.edit(images(1), ["make it red"], SamplingConfig(guidance_scale=2.0, seed=0))
    handle.remove()
    assert [im.size for im in edited] == [(32, 32)]
    assert seen and all(call["hidden_states"].shape[1] == 2 * 16 for call in seen)  # noisy + reference
    assert all(len(shapes) == 2 for call in seen for shapes in call["img_shapes"])


def test_loss_falls_and_only_the_dit_learns():
    model = build_tiny_qwen_image_edit(seed=2)
    conditions, targets = reca_batch(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def probe() -> float:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            return float(
                np.mean(
                    [model("generation", conditions=conditions, targets=targets).item() for _ in range(2)]
                )
            )

    model.train()
    before = probe()
    for step in range(20):
        loss = model("generation", conditions=conditions, targets=targets)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                if name.startswith(("vlm.", "vae.")):
                    assert not p.requires_grad and p.grad is None, name
                else:
                    assert name.startswith("transformer."), name
            assert (
                sum(float(p.grad.abs().sum()) for p in model.transformer.parameters() if p.grad is not None)
                > 0
            )
        optimizer.step()
    assert probe() < 0.8 * before


def test_sampling_size_and_save_load_round_trip(tmp_path):
    model = build_tiny_qwen_image_edit(seed=4)
    conditions = [Condition.text("a red circle"), Condition([])]
    sampling = SamplingConfig(guidance_scale=3.0, seed=2)
    out = model.generate(conditions, sampling)
    assert [im.size for im in out] == [(32, 32)] * 2
    model.save_pretrained(tmp_path / "ckpt")
    assert detect_family(tmp_path / "ckpt") == "qwen_image_edit"
    # a plain diffusers load works on the saved folder
    pipe = QwenImageEditPipeline.from_pretrained(str(tmp_path / "ckpt"))
    assert type(pipe.transformer).__name__ == "QwenImageTransformer2DModel"
    loaded = load_unified_model(tmp_path / "ckpt")
    assert isinstance(loaded, QwenImageEditAdapter) and loaded.config == model.config
    assert torch.allclose(
        model.sample_latents(conditions, sampling), loaded.sample_latents(conditions, sampling), atol=1e-5
    )
    again = loaded.generate(conditions, sampling)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out, again, strict=True))
