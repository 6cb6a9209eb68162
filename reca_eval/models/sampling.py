"""Token choice for autoregressive image sampling: classifier-free guidance, temperature, top-k/top-p,
seeded per-image generators, and the one place that knows the language model's cache keyword.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from reca_eval.models.protocol import SamplingConfig

# transformers 5.24 renamed the decoder's cache argument `past_key_values` -> `cache`; 5.23 swallows an
# unknown keyword into **kwargs and silently runs without a cache, so the name is read off the signature.
_CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_keyword(language_model: torch.nn.Module) -> str:
    """The keyword under which ``language_model.forward`` takes its KV cache."""
    params = inspect.signature(language_model.forward).parameters
    for name in _CACHE_KEYWORDS:
        if name in params:
            return name
    raise TypeError(
        f"{type(language_model).__name__}.forward takes none of {_CACHE_KEYWORDS}; "
        f"its parameters are {list(params)} (unsupported transformers version?)"
    )


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """Janus's CFG: uncond + scale * (cond - uncond); ``uncond`` is None when guidance is off."""
    if uncond is None:
        return cond
    return uncond + guidance_scale * (cond - uncond)


def uses_guidance(sampling: SamplingConfig) -> bool:
    # A scale of exactly 1 reduces the CFG formula to the conditional logits, so the second branch is skipped.
    return sampling.guidance_scale != 1.0


def is_greedy(sampling: SamplingConfig) -> bool:
    return sampling.temperature == 0 or sampling.top_k == 1


def check_sampling(sampling: SamplingConfig) -> None:
    if sampling.temperature < 0:
        raise ValueError(f"SamplingConfig.temperature must be >= 0, got {sampling.temperature}")
    if sampling.top_k is not None and sampling.top_k < 1:
        raise ValueError(f"SamplingConfig.top_k must be >= 1 or None, got {sampling.top_k}")
    if sampling.top_p is not None and not 0 < sampling.top_p <= 1:
        raise ValueError(f"SamplingConfig.top_p must be in (0, 1] or None, got {sampling.top_p}")


def image_generators(seed: int | Sequence[int], count: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image, seeded ``seed + index`` (or ``seed[index]`` when given one seed per
    image): an image does not depend on its batch-mates."""
    if isinstance(seed, int):
        seeds = [seed + i for i in range(count)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise ValueError(f"{len(seeds)} seeds given for {count} images")
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def pick_tokens(
    logits: torch.Tensor, sampling: SamplingConfig, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Next token per row of ``logits`` (B, V): argmax when greedy, else a filtered, tempered sample."""
    logits = logits.float()
    if is_greedy(sampling):
        return logits.argmax(dim=-1)
    scores = logits / sampling.temperature
    if sampling.top_k is not None:
        scores = TopKLogitsWarper(top_k=sampling.top_k)(None, scores)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        scores = TopPLogitsWarper(top_p=sampling.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    picks = [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
    return torch.cat(picks)
