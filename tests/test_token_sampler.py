"""reca_eval.models.sampling.TokenSampler: the distribution it samples, filtering, and per-image seeds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from reca_eval.models.protocol import SamplingConfig  # noqa: E402
from reca_eval.models.sampling import TokenSampler  # noqa: E402

PROBS = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])


def _draw(sampling: SamplingConfig, seeds: list[int] | int, steps: int, logits: torch.Tensor) -> torch.Tensor:
    pick = TokenSampler(sampling, seeds, logits.shape[0], steps, torch.device("cpu"))
    return torch.stack([pick(logits, step) for step in range(steps)], dim=1)  # (images, steps)


def test_frequencies_follow_the_probabilities_and_zero_is_never_drawn():
    steps = 20000
    logits = PROBS.log().expand(1, -1)  # log 0 = -inf: a token of probability zero
    tokens = _draw(SamplingConfig(temperature=1.0), [3], steps, logits)[0]
    freq = torch.bincount(tokens, minlength=len(PROBS)).double() / steps
    # 4.5 standard errors of a binomial share: fails for a sampler off by a few points
    se = (PROBS.double() * (1 - PROBS.double()) / steps).sqrt()
    assert torch.all((freq - PROBS.double()).abs() <= 4.5 * se + 1e-12), freq
    assert freq[-1] == 0


def test_temperature_top_k_and_greedy():
    logits = PROBS[:4].log().expand(1, -1)
    top2 = _draw(SamplingConfig(temperature=1.0, top_k=2), [0], 4000, logits)[0]
    assert set(top2.tolist()) == {0, 1}
    assert (top2 == 0).float().mean() == pytest.approx(2 / 3, abs=0.04)
    cold = _draw(SamplingConfig(temperature=0.25), [0], 4000, logits)[0]
    # p^4 renormalised: token 0 takes 0.5^4 / (0.5^4 + 0.25^4 + 0.15^4 + 0.1^4) = 0.94
    assert (cold == 0).float().mean() == pytest.approx(0.94, abs=0.02)
    greedy = _draw(SamplingConfig(temperature=0.0), [0, 1], 3, torch.randn(2, 7))
    assert torch.equal(greedy, greedy[:, :1].expand(-1, 3))


def test_an_image_depends_on_its_seed_not_its_batch():
    logits = torch.randn(1, 50).expand(5, -1)
    sampling = SamplingConfig(temperature=1.0)
    together = _draw(sampling, [11, 12, 13, 14, 15], 64, logits)
    alone = _draw(sampling, [13], 64, logits[:1])
    assert torch.equal(together[2], alone[0])
    assert not torch.equal(together[0], together[1])  # different seeds, different images
    # seed + i when one integer seed is given
    assert torch.equal(_draw(sampling, 11, 64, logits)[2], together[2])
