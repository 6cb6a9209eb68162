"""Training data: indexable sources of (image, caption) and the deterministic order they are read in.

Sources: an image folder (captions in ``<stem>.txt`` beside each image), webdataset-layout tars
(``key.jpg`` + ``key.txt`` / ``key.json``; read with ``tarfile`` so the ``webdataset`` package is not
needed), a Hugging Face dataset saved with ``save_to_disk`` (read with ``datasets.load_from_disk``),
and a ShapeWorld/"world" source: any iterable of (PIL image, caption), e.g. from ``reca_eval.shapeworld``.

Order: which source a micro-step reads and which items it gets are pure functions of (seed, step,
position), so a resumed run and an N-process run read exactly what an uninterrupted 1-process run
reads. Unreadable images are counted skips, replaced by the next readable item of the same source.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from reca_eval.core.images import IMAGE_SUFFIXES
from reca_eval.training.recipe import SourceSpec

TAR_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
PREFLIGHT_ITEMS = 16  # items decoded per source before training starts


class DataError(ValueError):
    """A source is missing, empty or unreadable; raised before training starts."""


@dataclass
class RawItem:
    """One stored item before decoding: bytes (files, tars) or an already decoded image (hf, world)."""

    item_id: str
    caption: str
    data: bytes | None = None
    image: Image.Image | None = None

    def content_hash(self) -> str:
        """sha256 of the stored bytes, or of the pixels for in-memory images: the cache's content key."""
        h = hashlib.sha256()
        if self.data is not None:
            h.update(self.data)
        else:
            assert self.image is not None
            h.update(f"{self.image.mode}:{self.image.size}".encode())
            h.update(self.image.tobytes())
        return h.hexdigest()


@dataclass
class Source:
    """An indexable source: ``read(i)`` returns the stored item; decoding happens in :func:`decode`."""

    name: str
    objective: str
    ratio: float
    size: int
    read: Callable[[int], RawItem]


def decode(item: RawItem) -> tuple[Image.Image | None, str]:
    """Decode to RGB; (None, reason) for corrupt/truncated data. Non-RGB modes are converted, not skipped."""
    try:
        if item.image is not None:
            image = item.image
            image.load()
        else:
            image = Image.open(io.BytesIO(item.data or b""))
            image.load()  # force full decoding so truncated files fail here, not later
        return image.convert("RGB"), ""
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable image ({type(exc).__name__}: {exc})"


# --- source readers -------------------------------------------------------------------------------


def folder_source(spec: SourceSpec, name: str) -> Source:
    root = Path(spec.path)
    if not root.is_dir():
        raise DataError(f"source {name}: image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def read(i: int) -> RawItem:
        path = files[i]
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else ""
        return RawItem(item_id=str(path.relative_to(root)), caption=caption, data=path.read_bytes())

    return Source(name, spec.objective, spec.ratio, len(files), read)


def _tar_paths(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_dir():
        return sorted(path.glob("*.tar"))
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(pattern))


def tar_source(spec: SourceSpec, name: str) -> Source:
    """Webdataset layout: members sharing a key (path up to the first dot of the basename) form a sample."""
    shards = _tar_paths(spec.path)
    if not shards:
        raise DataError(f"source {name}: no tar shards at {spec.path}")
    # key -> {ext: (shard, data offset, size)}; offsets let workers read concurrently without tarfile state.
    samples: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}
    for shard_index, shard in enumerate(shards):
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    directory, _, base = member.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if not dot:
                        continue
                    key = f"{directory}/{stem}" if directory else stem
                    samples.setdefault((shard_index, key), {})[ext.lower()] = (
                        member.offset_data,
                        member.size,
                    )
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"source {name}: cannot read tar shard {shard} ({exc})") from exc
    keys = [k for k in sorted(samples) if any(e in samples[k] for e in TAR_IMAGE_EXTS)]

    def member_bytes(shard_index: int, where: tuple[int, int]) -> bytes:
        offset, size = where
        with open(shards[shard_index], "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def read(i: int) -> RawItem:
        shard_index, key = keys[i]
        members = samples[(shard_index, key)]
        ext = next(e for e in TAR_IMAGE_EXTS if e in members)
        caption = ""
        if "txt" in members:
            caption = member_bytes(shard_index, members["txt"]).decode("utf-8").strip()
        elif "json" in members:
            meta = json.loads(member_bytes(shard_index, members["json"]))
            caption = str(meta.get(spec.caption_key, "")).strip()
        item_id = f"{shards[shard_index].name}:{key}"
        return RawItem(item_id=item_id, caption=caption, data=member_bytes(shard_index, members[ext]))

    return Source(name, spec.objective, spec.ratio, len(keys), read)


def hf_source(spec: SourceSpec, name: str) -> Source:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"source {name}: kind 'hf' needs the `datasets` package (pip install datasets)"
        ) from exc
    try:
        ds = datasets.load_from_disk(spec.path)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"source {name}: cannot load_from_disk({spec.path!r}) ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise DataError(f"source {name}: split {spec.split!r} not in {list(ds)}")
        ds = ds[spec.split]
    if spec.image_key not in ds.column_names:
        raise DataError(f"source {name}: no image column {spec.image_key!r} (columns: {ds.column_names})")
    has_caption = spec.caption_key in ds.column_names

    def read(i: int) -> RawItem:
        row = ds[i]
        value = row[spec.image_key]
        caption = str(row[spec.caption_key]).strip() if has_caption else ""
        if isinstance(value, Image.Image):
            return RawItem(item_id=str(i), caption=caption, image=value)
        if isinstance(value, dict) and value.get("bytes") is not None:
            return RawItem(item_id=str(i), caption=caption, data=value["bytes"])
        if isinstance(value, (bytes, bytearray)):
            return RawItem(item_id=str(i), caption=caption, data=bytes(value))
        return RawItem(item_id=str(i), caption=caption, data=b"")  # decodes as a counted skip

    return Source(name, spec.objective, spec.ratio, len(ds), read)


def iterable_source(spec: SourceSpec, name: str, items: Iterable[tuple[Image.Image, str]]) -> Source:
    """Materialise (image, caption) pairs; ``max_items`` bounds an endless generator such as ShapeWorld's."""
    if isinstance(items, Sequence) and not spec.max_items:
        pairs = items
    else:
        if not spec.max_items and not hasattr(items, "__len__"):
            raise DataError(f"source {name}: an iterable source needs max_items > 0 (it may never end)")
        pairs = list(itertools.islice(items, spec.max_items or None))

    def read(i: int) -> RawItem:
        pair = pairs[i]
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], Image.Image)):
            return RawItem(item_id=str(i), caption="", data=b"")  # a counted skip, not a crash
        return RawItem(item_id=str(i), caption=str(pair[1]), image=pair[0])

    return Source(name, spec.objective, spec.ratio, len(pairs), read)


def import_object(path: str) -> object:
    """``"package.module:attribute"`` -> the attribute."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        raise ValueError(f"{path!r} is not of the form 'module:attribute'")
    return getattr(importlib.import_module(module_name), attr)


def build_sources(
    specs: list[SourceSpec], iterables: dict[str, Iterable[tuple[Image.Image, str]]] | None = None
) -> list[Source]:
    """Open every source and check it is readable, so a bad dataset fails before training starts."""
    if not specs:
        raise DataError("data.sources: the recipe names no data source")
    iterables = iterables or {}
    sources = []
    for i, spec in enumerate(specs):
        name = spec.name or f"{spec.kind}:{spec.path}"
        label = f"data.sources.{i} ({name})"
        if spec.kind == "folder":
            source = folder_source(spec, label)
        elif spec.kind == "tar":
            source = tar_source(spec, label)
        elif spec.kind == "hf":
            source = hf_source(spec, label)
        elif name in iterables:
            source = iterable_source(spec, label, iterables[name])
        else:
            if not spec.path:
                raise DataError(
                    f"{label}: a world source needs path 'module:callable' or train(iterables={{...}})"
                )
            hook = import_object(spec.path)
            source = iterable_source(spec, label, hook() if callable(hook) else hook)
        source.name = name
        preflight(source, label)
        sources.append(source)
    return sources


def preflight(source: Source, label: str) -> None:
    if source.size == 0:
        raise DataError(f"{label}: empty, no images found")
    reasons = []
    for i in range(min(source.size, PREFLIGHT_ITEMS)):
        item = source.read(i)
        image, reason = decode(item)
        if image is not None:
            if source.objective in ("t2i", "i2t") and not item.caption:
                reasons.append(f"{item.item_id}: no caption")
                continue
            return
        reasons.append(f"{item.item_id}: {reason}")
    raise DataError(f"{label}: none of the first {len(reasons)} items is usable: " + "; ".join(reasons[:3]))


# --- deterministic order --------------------------------------------------------------------------


def source_for_step(seed: int, micro_step: int, ratios: list[float]) -> int:
    """Which source a micro-step reads: drawn by ratio, the same on every process and after resume."""
    if len(ratios) == 1:
        return 0
    rng = np.random.default_rng([seed, 1, micro_step])
    p = np.asarray(ratios, dtype=float)
    return int(rng.choice(len(ratios), p=p / p.sum()))


@dataclass
class Order:
    """Per-epoch permutations of one source, by position (items consumed so far)."""

    seed: int
    source_index: int
    size: int
    _perms: dict[int, np.ndarray] = field(default_factory=dict)

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 2, self.source_index, epoch]).permutation(self.size)
            self._perms = {epoch: perm}  # one epoch kept: reader threads only ever straddle one boundary
        return int(perm[offset])


@dataclass
class SkipCounter:
    """Unreadable or unusable items, by item id, with the reason: reported at the end and in logs."""

    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, source: str, item_id: str, reason: str) -> None:
        self.reasons[f"{source}/{item_id}"] = reason

    def __len__(self) -> int:
        return len(self.reasons)


@dataclass
class Example:
    image: Image.Image | None  # None when every frozen output came from the cache
    caption: str
    content_hash: str
    position: int  # position in the source's order: seeds the per-example randomness


def read_usable(
    source: Source,
    order: Order,
    position: int,
    skips: SkipCounter,
    needs_image: Callable[[RawItem, str], bool],
) -> Example:
    """The item at ``position``, or the next usable one after it (corrupt images are counted and passed over)."""
    for probe in range(position, position + source.size):
        item = source.read(order.index(probe))
        if source.objective in ("t2i", "i2t") and not item.caption:
            skips.add(source.name, item.item_id, "no caption")
            continue
        content_hash = item.content_hash()
        if not needs_image(item, content_hash):
            return Example(None, item.caption, content_hash, position)
        image, reason = decode(item)
        if image is None:
            skips.add(source.name, item.item_id, reason)
            continue
        return Example(image, item.caption, content_hash, position)
    raise DataError(f"source {source.name}: no usable item left (all {source.size} skipped)")
