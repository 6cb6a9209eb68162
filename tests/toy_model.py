"""A toy UnifiedModel of a few linear layers, for fast trainer tests (milliseconds per step on a CPU).

Understanding = a linear map of pixels to a few embedding tokens; generation targets = VQ-like ids
(argmax of a linear code projection over image patches); generation loss = cross-entropy of those ids
given the mean-pooled condition; understanding loss = cross-entropy of the caption's bytes.
``dropout`` draws from torch's global RNG, so a resume that failed to restore it would diverge.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig


class ToyUnifiedModel(nn.Module):
    family = "toy"

    def __init__(
        self,
        image_size: int = 8,
        hidden: int = 16,
        num_tokens: int = 4,
        patch: int = 4,
        codebook: int = 8,
        text_vocab: int = 64,
        text_len: int = 8,
        encoder_width: int = 0,
        encoder_depth: int = 0,
        delay_s: float = 0.0,
        nan_at_call: int = 0,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        self.config = dict(locals())
        del self.config["self"], self.config["__class__"]
        self.image_size, self.hidden, self.num_tokens = image_size, hidden, num_tokens
        self.patch, self.codebook, self.text_vocab, self.text_len = patch, codebook, text_vocab, text_len
        self.delay_s, self.nan_at_call, self.calls = delay_s, nan_at_call, 0
        pixels = 3 * image_size * image_size
        grid = (image_size // patch) ** 2
        self.num_targets = grid
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            # encoder_depth/width make the frozen encoder expensive, for the cache benchmark.
            layers: list[nn.Module] = []
            width = pixels
            for _ in range(encoder_depth):
                layers += [nn.Linear(width, encoder_width), nn.GELU()]
                width = encoder_width
            layers.append(nn.Linear(width, num_tokens * hidden))
            self.vision = nn.Sequential(*layers)
            self.vq = nn.Linear(3 * patch * patch, codebook)
            self.text_embed = nn.Embedding(text_vocab, hidden)
            self.null_condition = nn.Parameter(torch.zeros(hidden))
            self.gen_embed = nn.Embedding(codebook, hidden)
            self.language_model = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout))
            self.gen_head = nn.Linear(hidden, grid * codebook)
            self.text_head = nn.Linear(hidden, text_len * text_vocab)

    # --- frozen encoders ----------------------------------------------------------------------------
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        arrays = [
            np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
            for im in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0

    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values.flatten(1)).view(-1, self.num_tokens, self.hidden)

    def _patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p = self.patch
        x = pixel_values.unfold(2, p, p).unfold(3, p, p)  # B, C, gh, gw, p, p
        return x.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # B, grid, C*p*p

    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vq(self._patches(pixel_values)).argmax(-1)

    def vq_condition_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.gen_embed(self.generation_targets(pixel_values))

    def encoder_modules(self) -> dict[str, nn.Module]:
        return {"understanding": self.vision, "generation_targets": self.vq}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {
            "vision": self.vision,
            "vq": self.vq,
            "text_embed": self.text_embed,
            "language_model": self.language_model,
            "gen_head": self.gen_head,
            "text_head": self.text_head,
        }

    # --- losses -----------------------------------------------------------------------------------
    def _text_ids(self, text: str, length: int | None = None) -> torch.Tensor:
        ids = [b % self.text_vocab for b in text.encode("utf-8")]
        if length is not None:
            ids = (ids + [0] * length)[:length]
        return torch.tensor(ids or [0], dtype=torch.long)

    def _context(self, conditions: list[Condition]) -> torch.Tensor:
        rows = []
        for cond in conditions:
            parts = []
            for seg in cond.segments:
                if isinstance(seg, ImageEmbeds):
                    parts.append(seg.embeds.float())
                else:
                    parts.append(self.text_embed(self._text_ids(seg).to(self.null_condition.device)))
            rows.append(torch.cat(parts).mean(0) if parts else self.null_condition)
        return self.language_model(torch.stack(rows))

    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        logits = self.gen_head(self._context(conditions)).view(-1, self.num_targets, self.codebook)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            feats = self.understanding_embeddings(pixel_values)
        logits = self.text_head(self.language_model(feats.mean(1))).view(-1, self.text_len, self.text_vocab)
        ids = torch.stack([self._text_ids(t, self.text_len) for t in texts]).to(logits.device)
        return F.cross_entropy(logits.flatten(0, 1), ids.flatten())

    def forward(self, objective: str, **kwargs) -> torch.Tensor:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if objective == "generation":
            loss = self.generation_loss(**kwargs)
        elif objective == "understanding":
            loss = self.understanding_loss(**kwargs)
        else:
            raise ValueError(f"unknown objective {objective!r}")
        if self.nan_at_call and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return loss

    # --- sampling and saving ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        ids = self.gen_head(self._context(conditions)).view(-1, self.num_targets, self.codebook).argmax(-1)
        grid = self.image_size // self.patch
        images = []
        for row in ids:
            levels = (row.view(grid, grid).float() / max(self.codebook - 1, 1) * 255).byte().numpy()
            images.append(Image.fromarray(levels).resize((self.image_size, self.image_size)).convert("RGB"))
        return images

    def save_pretrained(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(self.config))


def build_toy(**kwargs) -> ToyUnifiedModel:
    return ToyUnifiedModel(**kwargs)


def load_toy(path: Path) -> ToyUnifiedModel:
    path = Path(path)
    model = ToyUnifiedModel(**json.loads((path / "config.json").read_text()))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model


def make_image_folder(root: Path, count: int, size: int = 8, seed: int = 0) -> Path:
    """Random RGB PNGs with caption sidecars (``<stem>.txt``), the folder-source layout."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
        (root / f"{i:04d}.txt").write_text(f"a shape number {i}")
    return root


def toy_recipe_dict(images: Path, output_dir: Path, **train) -> dict:
    """A small RecA + I2T recipe on the toy model (override parts with dict updates)."""
    return {
        "name": "toy",
        "model": {"builder": "tests.toy_model:build_toy", "kwargs": {}, "freeze": ["vision", "vq"]},
        "data": {
            "sources": [{"kind": "folder", "path": str(images), "objective": "recon"}],
            "num_workers": 0,
        },
        "objective": {"bottleneck": "downscale", "bottleneck_size": 4, "condition_dropout": 0.2},
        "train": {
            "output_dir": str(output_dir),
            "steps": 6,
            "batch_size": 4,
            "lr": 0.01,
            "checkpoint_every": 3,
            "logger": "none",
            "progress": False,
            **train,
        },
    }
