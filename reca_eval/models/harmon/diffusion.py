"""The per-token Gaussian diffusion of MAR's diffusion loss (Li et al. 2024), as Harmon uses it.

A DDPM with the improved-DDPM cosine noise schedule (1,000 training steps), epsilon prediction and a
learned variance interpolated between the posterior variance and beta ("learned range"); the loss is
the epsilon MSE plus the variational bound for the variance head (the mean's gradient stopped there).
Sampling re-spaces the chain to a few evenly spread steps and scales the per-step noise by a
temperature; classifier-free guidance mixes the conditional and unconditional epsilons and keeps the
conditional variance.

Our own code rather than diffusers' ``DDPMScheduler``: that scheduler has the cosine schedule and the
learned-range variance, but neither the sampling temperature nor the variational-bound loss that the
variance head is trained with.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, c) -> (N, 2C)


def cosine_betas(steps: int = 1000, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM's cosine schedule: alpha_bar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2 (float64)."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)],
        dtype=torch.float64,
        device="cpu",  # schedule arrays live on the CPU even when a model is built on the meta device
    )


def spaced_timesteps(steps: int, count: int) -> list[int]:
    """``count`` timesteps of ``steps`` evenly spread and rounded (improved DDPM's respacing with one section)."""
    if not 1 <= count <= steps:
        raise ValueError(f"cannot take {count} sampling steps out of {steps}")
    stride = (steps - 1) / (count - 1) if count > 1 else 1
    return sorted({round(k * stride) for k in range(count)})


class GaussianDiffusion:
    """A (possibly re-spaced) DDPM chain: its schedule arrays (float64) and the map from its own step
    index to the original timestep that the network is conditioned on."""

    def __init__(self, base_betas: torch.Tensor, use_timesteps: list[int] | None = None):
        base_alphas_cumprod = torch.cumprod(1 - base_betas, 0)
        if use_timesteps is None:
            use_timesteps = list(range(len(base_betas)))
        betas, last = [], 1.0
        for t in use_timesteps:
            betas.append(1 - float(base_alphas_cumprod[t]) / last)
            last = float(base_alphas_cumprod[t])
        self.timestep_map = torch.tensor(use_timesteps, dtype=torch.long, device="cpu")
        self.betas = torch.tensor(betas, dtype=torch.float64, device="cpu")
        self.num_timesteps = len(betas)
        ac = torch.cumprod(1 - self.betas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), ac[:-1]])
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = (1 / ac).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / ac - 1).sqrt()
        posterior_variance = self.betas * (1 - ac_prev) / (1 - ac)
        # The posterior variance is 0 at the first step, so its log takes the second step's value there.
        self.posterior_log_variance_clipped = torch.cat(
            [posterior_variance[1:2], posterior_variance[1:]]
        ).log()
        self.posterior_mean_coef1 = self.betas * ac_prev.sqrt() / (1 - ac)
        self.posterior_mean_coef2 = (1 - ac_prev) * (1 - self.betas).sqrt() / (1 - ac)
        self.log_betas = self.betas.log()

    @staticmethod
    def _at(array: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return array.to(t.device)[t].float().view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (
            self._at(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(
        self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (
            self._at(self.posterior_mean_coef1, t, xt) * x0 + self._at(self.posterior_mean_coef2, t, xt) * xt
        )
        return mean, self._at(self.posterior_log_variance_clipped, t, xt)

    def p_mean_logvar(
        self, eps: torch.Tensor, var_values: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t) from the network's epsilon and variance outputs."""
        min_log = self._at(self.posterior_log_variance_clipped, t, xt)
        max_log = self._at(self.log_betas, t, xt)
        frac = (var_values + 1) / 2  # [-1, 1] spans [posterior variance, beta]
        log_variance = frac * max_log + (1 - frac) * min_log
        x0 = (
            self._at(self.sqrt_recip_alphas_cumprod, t, xt) * xt
            - self._at(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps
        )
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_variance

    # ----------------------------------------------------------------------------------- training
    def training_losses(
        self, net: DenoiseFn, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (epsilon MSE, variational bound in bits) at timesteps ``t``; rows are tokens."""
        xt = self.q_sample(x0, t, noise)
        out = net(xt, self.timestep_map.to(t.device)[t], cond).float()
        eps, var_values = out.split(x0.shape[-1], dim=-1)
        mse = ((noise.float() - eps) ** 2).mean(-1)
        # The bound trains the variance only: the mean's prediction is held fixed in it.
        mean, log_variance = self.p_mean_logvar(eps.detach(), var_values, xt.float(), t)
        true_mean, true_log_variance = self.q_posterior(x0.float(), xt.float(), t)
        kl = _normal_kl(true_mean, true_log_variance, mean, log_variance).mean(-1) / math.log(2.0)
        nll = -_discretized_gaussian_log_likelihood(x0.float(), mean, 0.5 * log_variance).mean(-1) / math.log(
            2.0
        )
        vb = torch.where(t == 0, nll, kl)
        return mse, vb

    # ----------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        net: DenoiseFn,
        cond: torch.Tensor,
        noise: torch.Tensor,
        temperature: float = 1.0,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Ancestral sampling of rows conditioned on ``cond`` (N, D).

        ``noise`` (num_timesteps + 1, N, C): the start x_T, then one draw per step (the last unused), so
        the caller decides where each row's randomness comes from. With ``uncond`` the epsilon is
        ``uncond + scale * (cond - uncond)`` and the variance stays the conditional one. ``net`` is called
        with a 0-d timestep (every row is at the same step): a network may embed it once for all rows.
        """
        x = noise[0].float()
        channels = x.shape[-1]
        both = cond if uncond is None else torch.cat([cond, uncond])  # the rows' conditions, stacked once
        for i in reversed(range(self.num_timesteps)):
            net_t = self.timestep_map[i].to(x.device)
            if uncond is None:
                out = net(x, net_t, both).float()
                eps, var_values = out.split(channels, dim=-1)
            else:
                out_c, out_u = net(torch.cat([x, x]), net_t, both).float().chunk(2)
                eps_c, var_values = out_c.split(channels, dim=-1)
                eps_u = out_u[:, :channels]
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            mean, log_variance = self.p_mean_logvar(eps, var_values, x, t)
            x = (
                mean + (0.5 * log_variance).exp() * noise[self.num_timesteps - i] * temperature
                if i > 0
                else mean
            )
        return x


def _normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp()
    )


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood of ``x`` under a Gaussian discretised into 2/255-wide bins on [-1, 1] (nats)."""
    centered = x - means
    inv_std = (-log_scales).exp()
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1.0 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
