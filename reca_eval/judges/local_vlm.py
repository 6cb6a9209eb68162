"""A local vision-language judge in transformers (Qwen2.5-VL class): ImgEdit's fine-tuned ImgEdit-Judge
and GEdit's open judge (Qwen2.5-VL-72B-Instruct-AWQ) both run here from a local folder.

Loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor`` and ``local_files_only=True``. Decoding
is greedy so that a re-run gives the same reply. The snapshot recorded for a local judge is the
folder's name plus a hash of its config and weight file names and sizes, so two different
checkpoints never share a cache entry or a leaderboard row without saying so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.judges.backend import Content, JudgeReply

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def local_snapshot_id(path: Path) -> str:
    """``<folder name>@<hash of config.json + weight file names and sizes>`` (cheap: no weight reads)."""
    path = Path(path)
    config = path / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{path}: no config.json; not a transformers model folder")
    h = hashlib.sha256(config.read_bytes())
    for weight in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        h.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return f"{path.name}@{h.hexdigest()[:16]}"


@dataclass
class LocalVLMBackend:
    model: Any  # a transformers image-text-to-text model
    processor: Any
    snapshot: str
    max_new_tokens: int = 512
    name: str = "local-vlm"

    def settings(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": False}

    def messages(self, content: Content) -> tuple[list[dict[str, Any]], list[Image.Image]]:
        parts: list[dict[str, Any]] = []
        images: list[Image.Image] = []
        for part in content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, Image.Image):
                parts.append({"type": "image"})
                images.append(part.convert("RGB"))
            else:
                raise TypeError(f"judge content parts are str or PIL images, got {type(part).__name__}")
        return [{"role": "user", "content": parts}], images

    def complete(self, content: Content) -> JudgeReply:
        import torch

        messages, images = self.messages(content)
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.processor(text=[prompt], images=images or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        text = self.processor.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )[0]
        return JudgeReply(text=text, model_reported=self.snapshot)


def load_local_vlm(
    path: Path,
    *,
    device: str = "cuda",
    dtype: str = "bfloat16",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_new_tokens: int = 512,
) -> LocalVLMBackend:
    """Load a local Qwen2.5-VL-class judge. ImgEdit-Judge was trained with min/max pixels 1016064/1354752."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"judge model folder {path} has no config.json (download the judge there first)"
        )
    processor_kwargs: dict[str, Any] = {}
    if min_pixels is not None:
        processor_kwargs["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        processor_kwargs["max_pixels"] = int(max_pixels)
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True, **processor_kwargs)
    model = AutoModelForImageTextToText.from_pretrained(
        str(path), local_files_only=True, dtype=getattr(torch, dtype)
    ).to(device)
    model.eval()
    return LocalVLMBackend(model, processor, local_snapshot_id(path), max_new_tokens=max_new_tokens)


def describe_local(path: Path) -> dict[str, Any]:
    config = json.loads((Path(path) / "config.json").read_text())
    return {"architectures": config.get("architectures"), "model_type": config.get("model_type")}
