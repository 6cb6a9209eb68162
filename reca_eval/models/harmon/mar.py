"""MAR (masked autoregressive image generation, Li et al. 2024) as Harmon uses it: a ViT encoder over the
visible latent tokens (plus buffer tokens), a ViT decoder that fills the masked positions, and a small
diffusion MLP that turns each decoder state into one latent token.

    latent tokens (B, N, C) --z_proj--> + buffers (fake_latent) + pos --encoder blocks--> visible states
    visible states --decoder_embed--> + mask tokens at masked positions + pos --decoder blocks--> z (B, N, D)
    z --diffloss.net (SimpleMLPAdaLN, adaLN on z + timestep)--> epsilon and variance of one token

Module and parameter names follow the official MAR code (``mar.encoder_blocks.0.attn.qkv.weight``,
``mar.diffloss.net.res_blocks.0.adaLN_modulation.1.weight``), so official weights load by name; the ViT
block has timm's ``Block`` names and arithmetic (a pre-norm block written out here, because timm pulls in
torchvision, which this package's ``models`` extra leaves out). Position embeddings are learned for a
``grid`` x ``grid`` latent and interpolated bilinearly to other grids (Harmon: 16x16 learned, 32x32 at
512 px).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from reca_eval.models.harmon.diffusion import GaussianDiffusion, cosine_betas, spaced_timesteps

NORM_EPS = 1e-6
TRAIN_DIFFUSION_STEPS = 1000


@dataclass
class MARConfig:
    """The MAR part of a Harmon model (official ``mar_base``: 768 wide, 12 + 12 blocks; ``mar_huge``:
    1280 wide, 20 + 20 blocks)."""

    token_embed_dim: int = 16  # VAE latent channels x patch_size^2 (KL-16: 16)
    grid: int = 16  # side of the latent grid the position embeddings are learned for
    encoder_embed_dim: int = 1280
    encoder_depth: int = 20
    encoder_num_heads: int = 16
    decoder_embed_dim: int = 1280
    decoder_depth: int = 20
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    buffer_size: int = 64
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    mask_ratio_min: float = 0.7
    diffloss_d: int = 12
    diffloss_w: int = 1536
    num_sampling_steps: int = 100
    # Whether the sampling chain leaves out the last training step, the one whose beta is the cosine
    # schedule's 0.999 cap (alpha-bar falls 1,000x there). Re-spaced, that step multiplies the error of
    # the first epsilon prediction by 1 / sqrt(1 - beta) (1,327 at 25 steps, 316 at 100); a large,
    # long-trained head predicts epsilon there almost exactly (the official setting keeps the step),
    # a small one does not, and its samples blow up (the ShapeWorld Harmon model keeps it out).
    skip_capped_step: bool = False
    diffusion_batch_mul: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"mask_ratio_min must be in (0, 1], got {self.mask_ratio_min}")
        for name in ("encoder", "decoder"):
            width, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if width % heads:
                raise ValueError(f"{name}_embed_dim {width} is not a multiple of {name}_num_heads {heads}")
        if self.diffusion_batch_mul < 1 or self.num_sampling_steps < 1:
            raise ValueError("diffusion_batch_mul and num_sampling_steps must be >= 1")


# ------------------------------------------------------------------------------------------ ViT block
class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """timm's pre-norm ViT block (no layer scale, no drop path), with its parameter names."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------------------- diffusion head
def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.frequency_size = frequency_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) timesteps -> (N, hidden); a 0-d timestep (every row at the same step) -> (1, hidden)."""
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.reshape(-1)[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=NORM_EPS)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(_modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=NORM_EPS)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The denoiser of one token: input (N, C), timestep (N,), condition z (N, D) -> (N, 2C): epsilon and
    the variance interpolation value."""

    def __init__(self, in_channels: int, width: int, z_channels: int, depth: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(z_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_layer = FinalLayer(width, 2 * in_channels)
        self.apply(_xavier)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        # Zero modulation and output: every block starts as the identity, the head predicts zero.
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed_condition(self, c: torch.Tensor) -> torch.Tensor:
        """``cond_embed(z)``: what :meth:`forward` reads with ``embedded=True`` (a sampling chain embeds
        its rows' conditions once, not at each of its steps)."""
        return self.cond_embed(c.to(self.input_proj.weight.dtype))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, *, embedded: bool = False
    ) -> torch.Tensor:
        """``t``: (N,) timesteps, or one 0-d timestep that every row shares (embedded once and broadcast:
        the time embedding is a quarter of this network's arithmetic). ``c``: z (N, D), or
        :meth:`embed_condition` of it with ``embedded=True``."""
        dtype = self.input_proj.weight.dtype
        x = self.input_proj(x.to(dtype))
        y = self.time_embed(t) + (c if embedded else self.embed_condition(c))
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


class DiffLoss(nn.Module):
    """The diffusion head and its two chains: 1,000 training steps, ``num_sampling_steps`` re-spaced ones."""

    def __init__(
        self,
        target_channels: int,
        z_channels: int,
        depth: int,
        width: int,
        num_sampling_steps: int,
        skip_capped_step: bool = False,
    ):
        super().__init__()
        self.in_channels = target_channels
        self.net = SimpleMLPAdaLN(target_channels, width, z_channels, depth)
        betas = cosine_betas(TRAIN_DIFFUSION_STEPS)
        self.train_diffusion = GaussianDiffusion(betas)
        chain = TRAIN_DIFFUSION_STEPS - 1 if skip_capped_step else TRAIN_DIFFUSION_STEPS
        self.gen_diffusion = GaussianDiffusion(betas, spaced_timesteps(chain, num_sampling_steps))

    def token_losses(
        self, target: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Per-row loss (epsilon MSE + variance bound) at a random timestep and noise per row."""
        device = target.device
        t = torch.randint(0, self.train_diffusion.num_timesteps, (target.shape[0],), generator=generator)
        noise = torch.randn(target.shape, generator=generator, dtype=torch.float32)
        mse, vb = self.train_diffusion.training_losses(
            self.net, target.float(), z, t.to(device), noise.to(device)
        )
        return mse + vb


def _xavier(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------------------------ MAR
class MAR(nn.Module):
    def __init__(self, config: MARConfig):
        super().__init__()
        cfg = self.config = config
        seq_len = cfg.grid * cfg.grid
        enc, dec = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        self.buffer_size = cfg.buffer_size
        # The buffer tokens' content in Harmon (MAR's class embedding slot, always the "no class" one).
        self.fake_latent = nn.Parameter(torch.zeros(1, enc))
        self.z_proj = nn.Linear(cfg.token_embed_dim, enc)
        self.z_proj_ln = nn.LayerNorm(enc, eps=NORM_EPS)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len + cfg.buffer_size, enc))
        self.encoder_blocks = nn.ModuleList(
            [
                Block(enc, cfg.encoder_num_heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
                for _ in range(cfg.encoder_depth)
            ]
        )
        self.encoder_norm = nn.LayerNorm(enc, eps=NORM_EPS)
        self.decoder_embed = nn.Linear(enc, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len + cfg.buffer_size, dec))
        self.decoder_blocks = nn.ModuleList(
            [
                Block(dec, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
                for _ in range(cfg.decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(dec, eps=NORM_EPS)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, seq_len, dec))
        for p in (
            self.fake_latent,
            self.mask_token,
            self.encoder_pos_embed_learned,
            self.decoder_pos_embed_learned,
            self.diffusion_pos_embed_learned,
        ):
            nn.init.normal_(p, std=0.02)
        self.apply(_xavier)
        self.diffloss = DiffLoss(
            cfg.token_embed_dim,
            dec,
            cfg.diffloss_d,
            cfg.diffloss_w,
            cfg.num_sampling_steps,
            skip_capped_step=cfg.skip_capped_step,
        )
        self.mask_ratio_generator = stats.truncnorm((cfg.mask_ratio_min - 1.0) / 0.25, 0, loc=1.0, scale=0.25)

    # ----------------------------------------------------------------------------- position embeddings
    def _pos(self, learned: torch.Tensor, grid: tuple[int, int], buffers: bool) -> torch.Tensor:
        g = self.config.grid
        if grid == (g, g):
            return learned
        head, image = (
            (learned[:, : self.buffer_size], learned[:, self.buffer_size :]) if buffers else (None, learned)
        )
        image = image.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        image = F.interpolate(image.float(), size=grid, mode="bilinear").to(learned.dtype)
        image = image.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return image if head is None else torch.cat([head, image], dim=1)

    # ------------------------------------------------------------------------------------ masking
    def mask_ratio(self, generator: torch.Generator | None = None) -> float:
        """One draw of MAR's mask ratio: a Gaussian centred at 1 (std 0.25) truncated to [mask_ratio_min, 1]."""
        u = float(torch.rand((), generator=generator))
        return float(self.mask_ratio_generator.ppf(u))

    # --------------------------------------------------------------------------------- encoder/decoder
    def forward_mae_encoder(
        self, tokens: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Visible tokens (mask 0) of ``tokens`` (B, N, C), after the buffers: (B, buffer + visible, enc).
        Every row must have the same number of visible tokens."""
        b, n, _ = tokens.shape
        x = self.z_proj(tokens.to(self.z_proj.weight.dtype))
        buffers = self.fake_latent.view(1, 1, -1).expand(b, self.buffer_size, -1)
        x = torch.cat([buffers.to(x.dtype), x], dim=1)
        x = self.z_proj_ln(x + self._pos(self.encoder_pos_embed_learned, grid, buffers=True))
        keep = torch.cat([mask.new_zeros(b, self.buffer_size), mask], dim=1) == 0
        x = x[keep].reshape(b, -1, x.shape[-1])
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Decoder states of every latent position (B, N, dec) from the encoder states of the visible ones."""
        b, n = mask.shape
        x = self.decoder_embed(x)
        visible = torch.cat([mask.new_zeros(b, self.buffer_size), mask], dim=1) == 0
        padded = self.mask_token.to(x.dtype).expand(b, n + self.buffer_size, -1)
        x = padded.masked_scatter(visible.unsqueeze(-1), x)
        x = x + self._pos(self.decoder_pos_embed_learned, grid, buffers=True)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.buffer_size :]
        return x + self._pos(self.diffusion_pos_embed_learned, grid, buffers=False)


def mar_config_to_json(config: MARConfig) -> dict:
    return dataclasses.asdict(config)
