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


class TokenSampler:
    """Picks the next token of every image of a batch with a few batched tensor ops per step.

    Inverse-CDF sampling: image i draws all its uniforms (one per step) in one call from its own CPU
    generator, seeded ``seeds[i]`` (or ``seed + i``), and a step's token is the first whose cumulative
    probability exceeds that step's uniform. One random number per token rather than one per codebook
    entry (``torch.multinomial``'s exponential race draws a full row of noise per token, which costs
    more than the model's arithmetic at ShapeWorld sizes), and no Python per image inside the loop. An
    image's random numbers depend on its seed only: not on its batch-mates, the batch size or the
    device (they are drawn on the CPU).
    """

    def __init__(
        self,
        sampling: SamplingConfig,
        seeds: int | Sequence[int],
        count: int,
        steps: int,
        device: torch.device,
    ):
        self.sampling = sampling
        self.greedy = is_greedy(sampling)
        self.uniforms: torch.Tensor | None = None
        if not self.greedy:
            generators = image_generators(seeds, count, torch.device("cpu"))
            draws = [torch.rand(steps, generator=g, dtype=torch.float64) for g in generators]
            self.uniforms = torch.stack(draws, dim=1).to(device)  # (steps, count)

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Next token per row of ``logits`` (B, V) at decoding step ``step``."""
        logits = logits.float()
        if self.greedy:
            return logits.argmax(dim=-1)
        assert self.uniforms is not None
        probs = torch.softmax(_filtered_scores(logits, self.sampling), dim=-1)
        # float64 sums: the last entry is the total, and a uniform below 1 lands inside it
        cdf = probs.double().cumsum(dim=-1)
        target = (self.uniforms[step] * cdf[:, -1]).unsqueeze(-1)
        # right=True skips tokens of probability zero (their entry equals the one before)
        picks = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        return picks.clamp_(max=logits.shape[-1] - 1)


def _filtered_scores(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    scores = logits / sampling.temperature
    if sampling.top_k is not None:
        scores = TopKLogitsWarper(top_k=sampling.top_k)(None, scores)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        scores = TopPLogitsWarper(top_p=sampling.top_p)(None, scores)
    return scores
