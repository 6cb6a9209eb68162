"""What both ShapeWorld base pre-training scripts share: config loading and run start, scene ids, metric rows.

(``trainers.pretrain_shapeworld`` for the Janus base, ``trainers.pretrain_shapeworld_flow`` for the
flow base; each keeps its own stages.)
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

from reca_eval.core.records import atomic_write_text
from reca_eval.shapeworld.parse import READABLE_TOLERANCE

Config = TypeVar("Config")


def load_config(path: Path, overrides: list[str], cls: type[Config]) -> Config:
    """YAML + dotted ``key=value`` overrides into the dataclass ``cls`` (nested dataclass fields are
    read recursively); unknown keys are errors naming the key and the file."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)

    def build(kind: type, data: dict, where: str):
        known = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(where + k for k in unknown)}")
        defaults = kind()
        kwargs = {}
        for name, value in data.items():
            default = getattr(defaults, name)
            if dataclasses.is_dataclass(default):
                value = build(type(default), value or {}, f"{where}{name}.")
            elif isinstance(default, float) and isinstance(value, int | float | str):
                value = float(value)  # YAML 1.1 reads "3e-3" as text
            kwargs[name] = value
        return kind(**kwargs)

    return build(cls, raw, "")


def start_run(path: Path, overrides: list[str], cls: type[Config]) -> tuple[Config, Path] | None:
    """Load the config (errors go to stderr: ``None`` means exit 2), set torch's threads and seed from it,
    create ``output_dir`` and record the resolved config there as ``config.yaml``."""
    try:
        cfg = load_config(path, overrides, cls)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return cfg, out


STREAM_SCENES = 10**7  # scenes per world stream: ids of stream s are s * 10^7 + index


def scene_id(stream: int, index: int) -> int:
    """Scene ``index`` of world stream ``stream`` (streams are disjoint: 10^7 scenes each)."""
    return stream * STREAM_SCENES + index


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


@torch.no_grad()
def round_trip(model, pixels: torch.Tensor, scenes: list) -> dict[str, float]:
    """``pixels`` (B, 3, R, R) in [-1, 1] through the model's own generation tokenizer
    (``generation_targets`` -> ``decode_images``): the fraction of scenes the exact parser reads back as
    ``scenes``, of pixels whose every channel is within 40/255 of the original, and of images whose
    every pixel is — what bounds every score a model built on this tokenizer can reach."""
    from reca_eval.shapeworld.parse import parse_differences, parse_image

    images = model.decode_images(model.generation_targets(pixels))
    exact = [not parse_differences(parse_image(im), s) for im, s in zip(images, scenes, strict=True)]
    decoded = torch.stack(
        [torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) for im in images]
    )
    close = ((decoded - (pixels.cpu() + 1) * 127.5).abs() <= READABLE_TOLERANCE).all(dim=1)
    return {
        "exact_scenes": float(np.mean(exact)),
        "pixel_close": float(close.float().mean()),
        "exact_images": float(close.flatten(1).all(1).float().mean()),
    }


def percent(row: dict[str, Any], key: str) -> str:
    """``row[key]`` (a fraction) as a percentage for a base's README, or "not measured"."""
    return f"{100 * row[key]:.1f}%" if key in row else "not measured"


def asset_readme_head(name: str, about: list[str], summary: dict[str, Any]) -> list[str]:
    """The opening of a shipped base's README: its title, what it is (``about``), the command that built it,
    where and how long, and the header of the stage table."""
    return [
        f"# {name}",
        "",
        *about,
        "",
        f"    {summary['command']}",
        "",
        f"on {summary['device']} with {summary['threads']} thread(s), {summary['wall_s'] / 60:.1f} min wall.",
        "",
        "| stage | steps | figures |",
        "|---|---|---|",
    ]
