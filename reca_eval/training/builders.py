"""Model builders a recipe names in ``model.builder`` ("reca_eval.training.builders:tiny_janus"), and the
sub-modules that compute a model's frozen outputs (for the cache's encoder fingerprint).
"""

from __future__ import annotations

from pathlib import Path

import torch


def encoder_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module] | None:
    """{"understanding": module, "generation_targets": module} as the adapter declares them
    (``encoder_modules()``), or None for an adapter that does not."""
    declared = getattr(model, "encoder_modules", None)
    return None if declared is None else declared()


def tiny_janus(
    seed: int = 0, image_size: int = 32, patch_size: int = 8, codebook_size: int = 64, num_layers: int = 2
):
    """A randomly initialised tiny Janus behind the UnifiedModel protocol (tests, benchmarks, demos)."""
    from reca_eval.models.janus.adapter import JanusAdapter
    from reca_eval.models.janus.tiny import build_tiny_janus

    model, processor = build_tiny_janus(
        seed=seed,
        image_size=image_size,
        patch_size=patch_size,
        codebook_size=codebook_size,
        num_layers=num_layers,
    )
    return JanusAdapter(model, processor)


def tiny_harmon(seed: int = 0, image_size: int = 32, num_iterations: int = 4):
    """A randomly initialised tiny Harmon (Qwen2 + MAR + KL VAE) behind the UnifiedModel protocol."""
    from reca_eval.models.harmon.tiny import build_tiny_harmon

    return build_tiny_harmon(seed=seed, image_size=image_size, num_iterations=num_iterations)


def from_checkpoint(path: str, dtype: str = "float32"):
    """A local checkpoint folder (family from its config.json), e.g. Janus-Pro-1B or a trainer's final/."""
    from reca_eval.models.loading import load_unified_model

    return load_unified_model(Path(path), device="cpu", dtype=getattr(torch, dtype))
