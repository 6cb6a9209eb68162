"""From the official Harmon release to this package's layout.

The official release (``huggingface-cli download wusize/harmon --local-dir checkpoints``) is PyTorch files:
the Harmon weights (``harmon_0.5b.pth`` / ``harmon_1.5b.pth``, a bare state dict that the official scripts
pass straight to ``load_state_dict``: ``llm.*`` = a Qwen2.5-Instruct ``Qwen2ForCausalLM``, ``mar.*`` = MAR,
``proj_in.*``, ``proj_out.*``, the VAE left out) and MAR's KL-16 VAE (``kl16.ckpt``, LDM's
``AutoencoderKL`` names under ``"model"``); the tokenizer comes from the Qwen2.5-Instruct model of the same
size (``Qwen/Qwen2.5-1.5B-Instruct``). Checkpoints that RecA's training code saves (``iter_N.pth``) hold the
same names, bare or under ``"state_dict"``.
Our LLM is transformers' Qwen2 and our MAR keeps the official names, so those map one to one (MAR's
unused ``class_emb`` is dropped); the VAE is diffusers' ``AutoencoderKL`` and its names are rewritten
(:func:`convert_ldm_vae`): LDM's numbered ``down``/``up`` levels become diffusers' blocks (the decoder's in
reverse order), ``nin_shortcut`` becomes ``conv_shortcut``, and the 1x1-convolution attention becomes
linear ``to_q``/``to_k``/``to_v``/``to_out.0``.

:func:`convert_release` reads those files, checks every key and shape against the chosen size (or infers
the size), and writes a checkpoint folder with ``conversion.json`` recording the sources; ``reca-eval
convert harmon`` is its command.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from reca_eval import __version__
from reca_eval.core.progress import progress_bar
from reca_eval.core.records import atomic_write_dir
from reca_eval.models.harmon.adapter import IM_END, IMAGE_PAD, HarmonAdapter, HarmonConfig, projectors
from reca_eval.models.harmon.mar import MAR, MARConfig

# The LLM configurations of Qwen2.5-0.5B-Instruct and Qwen2.5-1.5B-Instruct, and the MAR each Harmon uses
# (official configs: mar_base with a 6 x 1024 diffusion head, mar_huge with 12 x 1536).
QWEN = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
}
MAR_SIZES = {
    "0.5b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, decoder_embed_dim=768,
                 decoder_depth=12, decoder_num_heads=12, diffloss_d=6, diffloss_w=1024),
    "1.5b": dict(encoder_embed_dim=1280, encoder_depth=20, encoder_num_heads=16, decoder_embed_dim=1280,
                 decoder_depth=20, decoder_num_heads=16, diffloss_d=12, diffloss_w=1536),
}  # fmt: skip
KL16 = dict(
    down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
    up_block_types=("UpDecoderBlock2D",) * 5,
    block_out_channels=(128, 128, 256, 256, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    scaling_factor=0.2325,
)
DROPPED = ("mar.class_emb.weight",)  # MAR's ImageNet class table: Harmon conditions through the LLM


def official_configs(variant: str) -> tuple[Qwen2Config, HarmonConfig, dict]:
    """(LLM config, Harmon config, VAE kwargs) of an official variant, ``"0.5b"`` or ``"1.5b"``."""
    if variant not in QWEN:
        raise ValueError(f"unknown Harmon variant {variant!r}; known: {sorted(QWEN)}")
    llm = Qwen2Config(
        vocab_size=151936,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        **QWEN[variant],
    )
    return llm, HarmonConfig(image_size=512, mar=MARConfig(**MAR_SIZES[variant])), dict(KL16)


# ---------------------------------------------------------------------------------------------- VAE
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_MID = {"block_1": "resnets.0", "block_2": "resnets.1", "attn_1": "attentions.0"}


def _vae_key(key: str, levels: int) -> str | None:
    """LDM name -> diffusers name (None: not part of the autoencoder, e.g. the GAN loss's weights)."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if m is None:
        return None
    part, rest = m.groups()
    rest = rest.replace("nin_shortcut", "conv_shortcut")
    rest = re.sub(r"^norm_out\.", "conv_norm_out.", rest)
    if (mm := re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(.+)", rest)) is not None:
        name, tail = mm.groups()
        rest = f"mid_block.{_MID[name]}.{_attn_tail(tail) if name == 'attn_1' else tail}"
    elif (mm := re.fullmatch(r"down\.(\d+)\.(block|attn|downsample)\.(.+)", rest)) is not None:
        level, kind, tail = mm.groups()
        rest = f"down_blocks.{level}." + _level_tail(kind, tail, "downsamplers")
    elif (mm := re.fullmatch(r"up\.(\d+)\.(block|attn|upsample)\.(.+)", rest)) is not None:
        level, kind, tail = mm.groups()
        # LDM numbers the decoder's levels from the finest; diffusers runs its up blocks from the coarsest.
        rest = f"up_blocks.{levels - 1 - int(level)}." + _level_tail(kind, tail, "upsamplers")
    return f"{part}.{rest}"


def _level_tail(kind: str, tail: str, sampler: str) -> str:
    if kind == "block":
        return "resnets." + tail
    if kind == "attn":
        index, rest = tail.split(".", 1)
        return f"attentions.{index}.{_attn_tail(rest)}"
    return f"{sampler}.0.{tail}"  # downsample.conv / upsample.conv


def _attn_tail(tail: str) -> str:
    name, param = tail.rsplit(".", 1)
    return f"{_ATTN[name]}.{param}"


def _vae_items(state: Mapping[str, torch.Tensor], levels: int) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(LDM name, diffusers name, value) of the autoencoder's weights; a 1x1-conv attention weight comes
    out as the linear one."""
    for key, value in state.items():
        new = _vae_key(key, levels)
        if new is None:
            continue
        attention = re.search(r"\.(to_q|to_k|to_v|to_out\.0)\.weight$", new) is not None
        if attention and value.ndim == 4 and tuple(value.shape[2:]) == (1, 1):
            value = value.reshape(value.shape[0], value.shape[1])
        yield key, new, value


def convert_ldm_vae(state: Mapping[str, torch.Tensor], levels: int = 5) -> dict[str, torch.Tensor]:
    """An LDM/MAR KL autoencoder state dict -> diffusers ``AutoencoderKL`` names (attention 1x1 convs
    become linear weights); keys outside the autoencoder (``loss.*``) are left out."""
    return {new: value for _, new, value in _vae_items(state, levels)}


# ---------------------------------------------------------------------------------------- the rest
def convert_official_state_dict(
    harmon: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor] | None = None, vae_levels: int = 5
) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official Harmon state dict (and the KL VAE's) into this package's parts:
    ``{"llm", "mar", "proj_in", "proj_out", "vae"}`` -> state dicts. ``vae`` may also come as ``vae.*``
    keys of ``harmon``. ValueError naming any key that belongs to no part."""
    parts: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("llm", "mar", "proj_in", "proj_out")}
    vae_state = dict(vae or {})
    unknown = []
    for key, value in harmon.items():
        head, _, rest = key.partition(".")
        if key in DROPPED:
            continue
        if head in parts and rest:
            parts[head][rest] = value
        elif head == "vae" and rest:
            vae_state.setdefault(rest, value)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"official Harmon state dict: {len(unknown)} unexpected key(s), e.g. {unknown[:5]}")
    parts["vae"] = convert_ldm_vae(vae_state, vae_levels)
    return parts


def build_from_parts(
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    tokenizer,
    llm_config: Qwen2Config,
    config: HarmonConfig,
    vae_kwargs: Mapping,
    dtype: torch.dtype = torch.float32,
) -> HarmonAdapter:
    """A HarmonAdapter holding converted weights (every part loaded strictly, the LLM's tied head allowed
    to be missing); ValueError naming the part whose weights do not fit."""
    previous = torch.get_default_dtype()
    # Built in the target dtype: a bfloat16 conversion never holds a float32 copy of the model.
    torch.set_default_dtype(dtype)
    try:
        llm = Qwen2ForCausalLM(llm_config)
        mar = MAR(config.mar)
        proj_in, proj_out = projectors(config.mar.encoder_embed_dim, int(llm_config.hidden_size))
        vae = AutoencoderKL(**vae_kwargs)
    finally:
        torch.set_default_dtype(previous)
    for name, module in (
        ("llm", llm),
        ("mar", mar),
        ("proj_in", proj_in),
        ("proj_out", proj_out),
        ("vae", vae),
    ):
        state = dict(parts.get(name, {}))
        if name == "llm" and "lm_head.weight" not in state and llm_config.tie_word_embeddings:
            state["lm_head.weight"] = state.get("model.embed_tokens.weight")
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"official Harmon weights: the {name} part does not fit ({exc})") from exc
    adapter = HarmonAdapter(llm, tokenizer, mar, proj_in, proj_out, vae, config)
    return adapter.to(dtype).eval()


# ------------------------------------------------------------------------------ the release on disk
class ConversionError(ValueError):
    """Input the conversion refuses; the message names the file and the key."""


@dataclass(frozen=True, eq=False)
class Variant:
    """One released size: its LLM config, Harmon config (the MAR) and VAE kwargs (diffusers)."""

    name: str
    llm: Qwen2Config
    harmon: HarmonConfig
    vae: dict
    vae_levels: int = 5
    vae_name: str = "KL-16"


def official_variant(name: str) -> Variant:
    llm, harmon, vae = official_configs(name)
    return Variant(name, llm, harmon, vae)


# The sizes `reca-eval convert harmon --size` accepts, in the order size inference tries them.
VARIANTS: dict[str, Callable[[], Variant]] = {
    name: functools.partial(official_variant, name) for name in QWEN
}
PROVENANCE_FILE = "conversion.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Fields of the --llm config.json that must agree with the size.
QWEN_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
SHOWN = 5  # mismatching keys a message names
HARMON_TOKENS = (IMAGE_PAD, IM_END, "<|im_start|>")  # the chat template's and the image slots'


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConversionError(f"--size {name!r} is not a Harmon size; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]()


def _expected_shapes(v: Variant) -> dict[str, dict[str, tuple[int, ...]]]:
    """Our modules' key -> shape per part, built on the meta device (no memory, well under a second)."""
    with torch.device("meta"):
        proj_in, proj_out = projectors(v.harmon.mar.encoder_embed_dim, int(v.llm.hidden_size))
        modules = {
            "llm": Qwen2ForCausalLM(v.llm),
            "mar": MAR(v.harmon.mar),
            "proj_in": proj_in,
            "proj_out": proj_out,
            "vae": AutoencoderKL(**v.vae),
        }
    return {name: {k: tuple(t.shape) for k, t in m.state_dict().items()} for name, m in modules.items()}


def _report(diffs: dict[str, list[str]]) -> str:
    lines = diffs["shape"] + diffs["unexpected"] + diffs["missing"]
    count = len(lines)
    more = f" (and {count - SHOWN} more)" if count > SHOWN else ""
    return f"{count} key(s) differ: " + "; ".join(lines[:SHOWN]) + more


def _compare(
    items: list[tuple[str, tuple[int, ...]]], expected: Mapping[str, tuple[int, ...]], optional=()
) -> dict[str, list[str]]:
    """(name, shape) pairs against the expected table: wrong shapes, names it lacks, names missing."""
    diffs: dict[str, list[str]] = {"shape": [], "unexpected": [], "missing": []}
    seen = set()
    for key, shape in items:
        seen.add(key)
        if key not in expected:
            diffs["unexpected"].append(f"{key} is not one of its keys")
        elif shape != expected[key]:
            diffs["shape"].append(f"{key} has shape {list(shape)}, expected {list(expected[key])}")
    diffs["missing"] = [f"{key} is missing" for key in expected if key not in seen and key not in optional]
    return diffs


def harmon_differences(state: Mapping[str, torch.Tensor], v: Variant) -> dict[str, list[str]]:
    """The official Harmon state dict against size ``v``: official names (``llm.*``, ``mar.*``,
    ``proj_in.*``, ``proj_out.*``); MAR's ``class_emb`` and any ``vae.*`` keys are not compared here. A state
    dict without any ``llm.*`` key is compared without the LLM: the official code loads the LLM from the
    Qwen2.5 model first and the file over it, so such a file takes the LLM from ``--llm``."""
    shapes = _expected_shapes(v)
    with_llm = any(k.startswith("llm.") for k in state)
    parts = ("llm", "mar", "proj_in", "proj_out") if with_llm else ("mar", "proj_in", "proj_out")
    expected = {f"{part}.{k}": s for part in parts for k, s in shapes[part].items()}
    optional = {"llm.lm_head.weight"} if v.llm.tie_word_embeddings else set()
    items = [(k, tuple(t.shape)) for k, t in state.items() if k not in DROPPED and not k.startswith("vae.")]
    return _compare(items, expected, optional)


def _differs(diffs: dict[str, list[str]]) -> bool:
    return any(diffs.values())


def check_harmon_state(state: Mapping[str, torch.Tensor], size: str, source: str) -> Variant:
    """``size``'s Variant when every key and shape of ``state`` fits it; else ConversionError naming the first
    mismatching keys and the size the state dict does fit, if any."""
    v = get_variant(size)
    diffs = harmon_differences(state, v)
    if not _differs(diffs):
        return v
    fits = [n for n in VARIANTS if n != size and not _differs(harmon_differences(state, get_variant(n)))]
    hint = (
        f"; it fits Harmon-{fits[0]}: pass --size {fits[0]}"
        if fits
        else f"; it fits no other known size ({', '.join(n for n in VARIANTS if n != size)}) either"
    )
    raise ConversionError(f"{source}: not Harmon-{size} weights: {_report(diffs)}{hint}")


def infer_size(state: Mapping[str, torch.Tensor], source: str) -> str:
    """The first known size whose every key and shape ``state`` fits; ConversionError naming the closest."""
    diffs = {name: harmon_differences(state, get_variant(name)) for name in VARIANTS}
    for name, d in diffs.items():
        if not _differs(d):
            return name
    closest = min(diffs, key=lambda n: sum(len(lines) for lines in diffs[n].values()))
    raise ConversionError(
        f"{source}: fits no Harmon size ({', '.join(VARIANTS)}); against the closest, {closest}: "
        f"{_report(diffs[closest])}"
    )


def check_vae_state(state: Mapping[str, torch.Tensor], v: Variant, source: str) -> dict[str, torch.Tensor]:
    """The LDM/MAR KL VAE state dict converted to diffusers names, after checking every key and shape
    against ``v``'s VAE (messages name the file's own keys)."""
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        raise ConversionError(
            f"{source}: no VAE weights (no encoder.* or decoder.* key); its keys start {list(state)[:SHOWN]}"
        )
    expected = _expected_shapes(v)["vae"]
    items, origin = [], {}
    for key, new, value in _vae_items(state, v.vae_levels):
        origin[new] = key
        items.append((new, tuple(value.shape)))
    diffs = _compare(items, expected)
    if _differs(diffs):
        # Name the file's own (LDM) keys (the diffusers names are ours), the latent-facing ones first: they
        # say what the VAE is (its latent channels), where the others only say it differs.
        for kind in ("shape", "unexpected"):
            diffs[kind] = [_ldm_name(line, origin) for line in diffs[kind]]
        diffs["shape"].sort(key=lambda line: _LATENT_KEYS.match(line) is None)
        raise ConversionError(
            f"{source}: not a {v.vae_name} VAE ({v.vae['latent_channels']} latent channels, "
            f"{2 ** (v.vae_levels - 1)}x down-sampling): {_report(diffs)}"
        )
    return convert_ldm_vae(state, v.vae_levels)


_LATENT_KEYS = re.compile(r"(encoder\.conv_out|decoder\.conv_in|quant_conv|post_quant_conv)\.")


def _ldm_name(line: str, origin: Mapping[str, str]) -> str:
    key, _, rest = line.partition(" ")
    return f"{origin.get(key, key)} {rest}"


@dataclass
class LoadedFile:
    """A state dict read from a file, and where in the file it sat (None: the file is the state dict)."""

    path: Path
    state: dict[str, torch.Tensor]
    key: str | None


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
_PICKLE_MAGIC = b"\x80"  # its legacy format: a pickle (protocol >= 2)


def load_state_file(path: Path, flag: str) -> LoadedFile:
    """A state dict from a PyTorch file, read with ``torch.load(weights_only=True)`` (memory-mapped when the
    format allows), bare or under ``state_dict`` / ``model`` / ``module``; ConversionError naming the file
    for anything else."""
    path = Path(path)
    where = f"{flag} {path}"
    if not path.exists():
        raise ConversionError(f"{where}: no such file")
    if path.is_dir():
        raise ConversionError(
            f"{where}: a folder, not a PyTorch file (a DeepSpeed checkpoint folder is merged into one .pth "
            "first, e.g. with the RecA fork's Harmon/scripts/convert_ckpt.py)"
        )
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise ConversionError(
            f"{where}: not a PyTorch file (neither torch.save's zip format nor its legacy one)"
        )
    try:
        # Training scripts (MAR's among them) save their argparse.Namespace beside the weights: a plain
        # attribute holder, safe to rebuild, so it is allowed; anything else stays refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(
                str(path), map_location="cpu", weights_only=True, mmap=head.startswith(_ZIP_MAGIC)
            )
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise ConversionError(f"{where}: not a readable PyTorch file ({_first_line(text)})") from None
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), _first_line(text))
        raise ConversionError(
            f"{where}: holds Python objects besides tensors, which torch.load(weights_only=True) does not "
            f"run ({detail}); load it in the code that wrote it and save its state dict alone"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as exc:
        raise ConversionError(
            f"{where}: not a readable PyTorch file, truncated or corrupt ({_first_line(str(exc))})"
        ) from None
    state, key = _find_state_dict(obj, where)
    return LoadedFile(path, state, key)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _find_state_dict(obj, where: str) -> tuple[dict[str, torch.Tensor], str | None]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state dict (names -> tensors)")
    candidates = [(obj, None)] + [(obj[k], k) for k in ("state_dict", "model", "module") if k in obj]
    for value, key in candidates:
        if isinstance(value, Mapping) and value and all(isinstance(t, torch.Tensor) for t in value.values()):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise ConversionError(f"{where}: state dict key {bad[0]!r} is not a string")
            return dict(value), key
    tensors = [k for k, t in obj.items() if isinstance(t, torch.Tensor)]
    if tensors:
        odd = next(k for k, t in obj.items() if not isinstance(t, torch.Tensor))
        raise ConversionError(
            f"{where}: key {odd!r} holds a {type(obj[odd]).__name__}, not a tensor, beside {len(tensors)} tensor(s)"
        )
    raise ConversionError(
        f"{where}: no state dict at the top level or under 'state_dict', 'model' or 'module'; "
        f"its keys: {list(obj)[:8]}"
    )


def load_llm_tokenizer(llm: str, v: Variant):
    """The tokenizer of ``--llm`` (a Qwen2.5-Instruct folder or Hub id), after checking its config.json,
    where there is one, against the size, and that it carries the special tokens Harmon's prompts use."""
    from transformers import AutoConfig

    path = Path(llm).expanduser()
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", llm) is not None and not path.exists()
    if not path.exists() and not hub_id:
        raise ConversionError(f"--llm {llm}: no such folder (nor a Hugging Face model id)")
    if path.exists() and not path.is_dir():
        raise ConversionError(
            f"--llm {path}: a file; pass the Qwen2.5-Instruct folder (tokenizer files) or its Hub id"
        )
    source = llm if hub_id else str(path)
    if hub_id or (path / "config.json").is_file():
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            fetch = f"; fetch it first (hf download {llm} --local-dir DIR) and pass DIR" if hub_id else ""
            raise ConversionError(
                f"--llm {llm}: its config.json cannot be read ({_first_line(str(exc))}){fetch}"
            ) from None
        for name in QWEN_FIELDS:
            got, want = getattr(config, name, None), getattr(v.llm, name)
            if got is not None and got != want:
                raise ConversionError(
                    f"--llm {llm}: config.json has {name} {got}, Harmon-{v.name}'s Qwen2.5 has {want}; pass the "
                    f"Qwen2.5-Instruct model of the {v.name} size"
                )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConversionError(
            f"--llm {llm}: no tokenizer could be loaded ({_first_line(str(exc))})"
        ) from None
    for token in HARMON_TOKENS:
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
            raise ConversionError(
                f"--llm {llm}: the tokenizer lacks {token!r}, which Harmon's prompts use: not a Qwen2.5 tokenizer"
            )
    return tokenizer


def load_llm_weights(llm: str, v: Variant, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The Qwen2.5 weights of ``--llm`` (folder or Hub id) as a state dict, checked against the size."""
    path = Path(llm).expanduser()
    source = str(path) if path.exists() else llm
    try:
        model = Qwen2ForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConversionError(
            f"--llm {llm}: the weights file holds no llm.* keys, so the LLM's weights come from here, and none "
            f"could be loaded ({_first_line(str(exc))})"
        ) from None
    state = model.state_dict()
    expected = _expected_shapes(v)["llm"]
    diffs = _compare([(k, tuple(t.shape)) for k, t in state.items()], expected)
    if _differs(diffs):
        raise ConversionError(f"--llm {llm}: not the Qwen2.5 of Harmon-{v.name}: {_report(diffs)}")
    return state


@dataclass
class SourceFile:
    """One input of a conversion, as conversion.json records it."""

    role: str  # weights | vae | llm
    file: str
    path: str
    bytes: int
    sha256: str
    state_dict_key: str | None = None  # where in the file the state dict sat (None: the file is one)


@dataclass
class ConversionRecord:
    """What conversion.json holds: the size, the dtype written, every source file with its hash."""

    size: str
    size_inferred: bool
    dtype: str
    llm: str  # the --llm folder or Hub id the tokenizer came from
    llm_weights: str = "weights"  # where the LLM's weights came from: the weights file, or --llm
    sources: list[SourceFile] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    converter: str = f"reca-eval {__version__} (reca_eval.models.harmon.convert)"
    release: str = "wusize/harmon (github.com/wusize/Harmon)"


def _sha256(path: Path, show: bool) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if not show:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
            return digest.hexdigest()
        with progress_bar() as progress:
            task = progress.add_task(f"sha256 {path.name}", total=size)
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
                progress.advance(task, len(chunk))
    return digest.hexdigest()


def _source(role: str, path: Path, show: bool, key: str | None = None) -> SourceFile:
    path = Path(path)
    return SourceFile(role, path.name, str(path.resolve()), path.stat().st_size, _sha256(path, show), key)


# The tokenizer's files in an --llm folder (small); its *.safetensors are hashed only when read.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "config.json")


def check_out_dir(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or not empty without ``overwrite``, or that holds an input
    (replacing it would delete that input)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConversionError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
        root = out.resolve()
        for path in inputs:
            if Path(path).resolve().is_relative_to(root):
                raise ConversionError(
                    f"--out {out} holds the input {path}: --overwrite would delete it; choose another folder"
                )


def convert_release(
    weights: Path,
    vae: Path | None,
    llm: str,
    out: Path,
    size: str | None = None,
    dtype: str = "auto",
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = True,
) -> ConversionRecord:
    """Convert the official release files into a checkpoint folder ``out`` (written whole, or not at all).

    ``weights``: ``harmon_<size>.pth``; ``vae``: ``kl16.ckpt`` (None when the weights carry ``vae.*``
    keys); ``llm``: the Qwen2.5-Instruct folder or Hub id for the tokenizer; ``size``: a key of VARIANTS
    (None: inferred from the shapes); ``dtype``: ``auto`` (the LLM weights' own) or a DTYPES key.
    Every refusal is a ConversionError naming the file and the key, raised before anything is written."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    weights = Path(weights)
    inputs = [
        weights,
        *([Path(vae)] if vae is not None else []),
        *([Path(llm)] if Path(llm).exists() else []),
    ]
    check_out_dir(Path(out), inputs, overwrite)

    log(f"reading {weights}{_gb(weights)}")
    harmon = load_state_file(weights, "--weights")
    where = f"--weights {weights}"
    inferred = size is None
    if size is None:
        size = infer_size(harmon.state, where)
        log(f"size: {size} (from the shapes of {weights.name})")
        v = get_variant(size)
    else:
        v = check_harmon_state(harmon.state, size, where)

    carried = {k.removeprefix("vae."): t for k, t in harmon.state.items() if k.startswith("vae.")}
    if vae is not None:
        log(f"reading {vae}{_gb(Path(vae))}")
        vae_file = load_state_file(Path(vae), "--vae")
        vae_state = check_vae_state(vae_file.state, v, f"--vae {vae}")
    elif carried:
        vae_file = None
        vae_state = check_vae_state(carried, v, f"{where} (its vae.* keys)")
    else:
        raise ConversionError(
            f"{where} holds no vae.* keys, so --vae is needed: the release's checkpoints/kl16.ckpt"
        )

    parts = convert_official_state_dict({k: t for k, t in harmon.state.items() if not k.startswith("vae.")})
    parts["vae"] = vae_state  # --vae wins over vae.* keys the weights may carry
    _check_tied_head(parts["llm"], v, where)
    target = _target_dtype(dtype, harmon.state)

    log(f"tokenizer: {llm}")
    tokenizer = load_llm_tokenizer(llm, v)
    llm_weights = "weights"
    if not parts["llm"]:
        log(
            f"{weights.name} holds no llm.* keys: the LLM's weights come from {llm}, as the official code loads them"
        )
        parts["llm"] = load_llm_weights(llm, v, target)
        llm_weights = "--llm"

    log("hashing the sources")
    sources = [_source("weights", weights, progress, harmon.key)]
    if vae_file is not None:
        sources.append(_source("vae", vae_file.path, progress, vae_file.key))
    llm_path = Path(llm).expanduser()
    if llm_path.is_dir():
        sources += [_source("llm", llm_path / n, False) for n in _TOKENIZER_FILES if (llm_path / n).is_file()]
        if llm_weights == "--llm":
            sources += [_source("llm", f, progress) for f in sorted(llm_path.glob("*.safetensors"))]
    record = ConversionRecord(
        size=size,
        size_inferred=inferred,
        dtype=str(target).removeprefix("torch."),
        llm=llm,
        llm_weights=llm_weights,
        sources=sources,
        dropped_keys=sorted(k for k in harmon.state if k in DROPPED),
    )

    log(f"building Harmon-{size} and loading the weights ({record.dtype})")
    adapter = build_from_parts(parts, tokenizer, v.llm, v.harmon, v.vae, target)

    log(f"writing {out}")

    def write(root: Path) -> None:
        adapter.save_pretrained(root)
        text = json.dumps(dataclasses.asdict(record), indent=2) + "\n"
        (root / PROVENANCE_FILE).write_text(text, encoding="utf-8")

    atomic_write_dir(Path(out), write)
    return record


def _gb(path: Path) -> str:
    return f" ({path.stat().st_size / 1e9:.2f} GB)" if path.is_file() else ""


def _check_tied_head(llm: Mapping[str, torch.Tensor], v: Variant, where: str) -> None:
    """Qwen2.5-0.5B/1.5B tie the output head to the input embeddings; a file whose two differ is not
    one of them (loading it would silently keep one of the two)."""
    head, embed = llm.get("lm_head.weight"), llm.get("model.embed_tokens.weight")
    if v.llm.tie_word_embeddings and head is not None and embed is not None and not torch.equal(head, embed):
        raise ConversionError(
            f"{where}: llm.lm_head.weight differs from llm.model.embed_tokens.weight, but Harmon-{v.name}'s "
            "Qwen2.5 ties them"
        )


def _target_dtype(dtype: str, state: Mapping[str, torch.Tensor]) -> torch.dtype:
    if dtype != "auto":
        return DTYPES[dtype]
    found = next((t.dtype for k, t in state.items() if k.startswith("llm.") and t.is_floating_point()), None)
    return found if found in DTYPES.values() else torch.float32


def convert_official_checkpoint(
    harmon_path: Path, vae_path: Path, qwen_dir: Path, out_dir: Path, variant: str
) -> Path:
    """:func:`convert_release` in float32, replacing ``out_dir``: ``harmon_<variant>.pth``, ``kl16.ckpt`` and a
    local Qwen2.5-Instruct folder for the tokenizer."""
    convert_release(
        Path(harmon_path), Path(vae_path), str(qwen_dir), Path(out_dir), size=variant, dtype="float32",
        overwrite=True, progress=False,
    )  # fmt: skip
    return Path(out_dir)
