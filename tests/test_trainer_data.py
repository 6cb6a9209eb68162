"""Data sources, bad input (skips counted, empty data rejected early), bottleneck, dropout, the cache."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reca_eval.models.instructions import RECONSTRUCTION_INSTRUCTIONS
from reca_eval.training.cache import FrozenOutputCache, module_fingerprint
from reca_eval.training.data import DataError, Order, SkipCounter, build_sources, read_usable, source_for_step
from reca_eval.training.loop import train
from reca_eval.training.objectives import FrozenEncoders, bottleneck, example_rng, recon_conditions
from reca_eval.training.recipe import ObjectiveSpec, SourceSpec, recipe_from_dict
from tests.toy_model import ToyUnifiedModel, make_image_folder, toy_recipe_dict


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, items: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in items.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_source_webdataset_layout(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_tar(
        tmp_path / "shard-000.tar",
        {
            "a/0001.png": png_bytes(img),
            "a/0001.txt": b"a red square",
            "a/0002.png": png_bytes(img[::-1]),
            "a/0002.json": b'{"caption": "a blue circle"}',
            "a/0003.txt": b"caption without an image",
        },
    )
    (source,) = build_sources([SourceSpec(kind="tar", path=str(tmp_path), objective="t2i")])
    assert source.size == 2
    items = [source.read(i) for i in range(2)]
    assert [it.caption for it in items] == ["a red square", "a blue circle"]
    assert items[0].content_hash() != items[1].content_hash()


def test_hf_dataset_source_reads_images_and_captions_and_names_missing_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    ds = datasets.Dataset.from_dict({"image": images, "caption": ["a", "b", "c"]}).cast_column(
        "image", datasets.Image()
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "ds"))
    (source,) = build_sources([SourceSpec(kind="hf", path=str(tmp_path / "ds"), objective="t2i")])
    assert source.size == 3
    item = source.read(1)
    assert item.caption == "b"
    assert item.content_hash() != source.read(0).content_hash()
    with pytest.raises(DataError, match="no image column 'pixels'"):
        build_sources([SourceSpec(kind="hf", path=str(tmp_path / "ds"), image_key="pixels")])
    with pytest.raises(DataError, match="split 'test'"):
        build_sources([SourceSpec(kind="hf", path=str(tmp_path / "ds"), split="test")])


def test_world_iterable_source_takes_max_items():
    def endless():
        i = 0
        while True:
            yield Image.new("RGB", (8, 8), (i % 256, 0, 0)), f"scene {i}"
            i += 1

    spec = SourceSpec(kind="world", name="world", objective="i2t", max_items=5)
    (source,) = build_sources([spec], iterables={"world": endless()})
    assert source.size == 5
    assert source.read(4).caption == "scene 4"
    with pytest.raises(DataError, match="max_items"):
        build_sources([SourceSpec(kind="world", name="w", objective="recon")], iterables={"w": endless()})


def test_empty_and_unreadable_sources_fail_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data\.sources\.0.*empty"):
        build_sources([SourceSpec(kind="folder", path=str(tmp_path / "empty"))])
    with pytest.raises(DataError, match="does not exist"):
        build_sources([SourceSpec(kind="folder", path=str(tmp_path / "nowhere"))])
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="none of the first 3 items is usable"):
        build_sources([SourceSpec(kind="folder", path=str(bad))])
    # t2i needs captions: images without sidecars are unusable for it
    make_image_folder(tmp_path / "nocap", 2)
    for txt in (tmp_path / "nocap").glob("*.txt"):
        txt.unlink()
    with pytest.raises(DataError, match="no caption"):
        build_sources([SourceSpec(kind="folder", path=str(tmp_path / "nocap"), objective="t2i")])


def test_train_with_empty_folder_errors_before_the_model_is_built(tmp_path):
    (tmp_path / "empty").mkdir()
    built = []
    raw = toy_recipe_dict(tmp_path / "empty", tmp_path / "out")
    raw["model"]["builder"] = "tests.test_trainer_data:recording_builder"
    RECORDED.clear()
    with pytest.raises(DataError, match="empty"):
        train(recipe_from_dict(raw))
    assert RECORDED == built  # nothing was built
    assert not (tmp_path / "out" / "checkpoints").exists()


RECORDED: list[int] = []


def recording_builder(**kwargs):
    RECORDED.append(1)
    return ToyUnifiedModel(**kwargs)


def test_corrupt_images_are_skipped_and_counted_nonrgb_converted(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 6)
    rng = np.random.default_rng(1)
    good = png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (root / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "gray.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    (root / "rgba.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)))
    (root / "palette.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), mode="P"))
    # 11 items, 4 steps x 4 = 16 positions: every item is visited at least once
    result = train(recipe_from_dict(toy_recipe_dict(root, tmp_path / "out", steps=4)))
    assert set(result.skipped) == {f"folder:{root}/trunc.png", f"folder:{root}/garbage.jpg"}
    assert all("unreadable image" in reason for reason in result.skipped.values())
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    summary = (tmp_path / "out" / "train_summary.json").read_text()
    assert '"skipped": 2' in summary


def test_read_usable_replaces_a_corrupt_item_deterministically(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 4)
    (root / "0002.png").write_bytes(b"broken")
    (source,) = build_sources([SourceSpec(kind="folder", path=str(root))])
    order = Order(seed=0, source_index=0, size=source.size)
    skips = SkipCounter()
    examples = [read_usable(source, order, p, skips, lambda item, h: True) for p in range(8)]
    assert all(ex.image is not None and ex.image.mode == "RGB" for ex in examples)
    assert list(skips.reasons) == [f"{source.name}/0002.png"]
    again = [
        read_usable(source, order, p, SkipCounter(), lambda item, h: True).content_hash for p in range(8)
    ]
    assert again == [ex.content_hash for ex in examples]


def test_source_mix_follows_ratios():
    picks = [source_for_step(0, m, [3.0, 1.0]) for m in range(4000)]
    assert abs(np.mean(np.asarray(picks) == 0) - 0.75) < 0.03
    assert picks == [source_for_step(0, m, [3.0, 1.0]) for m in range(4000)]


def test_bottleneck_removes_detail():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    small = bottleneck(image, ObjectiveSpec(bottleneck="downscale", bottleneck_size=4), 32)
    assert small.size == (4, 4)
    blurred = bottleneck(image, ObjectiveSpec(bottleneck="blur", blur_sigma=2.0), 32)
    assert np.asarray(blurred, dtype=float).std() < 0.5 * np.asarray(image, dtype=float).std()
    assert bottleneck(image, ObjectiveSpec(bottleneck="none"), 32) is image


def test_condition_dropout_rate_and_instruction_per_example():
    model = ToyUnifiedModel()
    from reca_eval.training.data import Example

    images = [Image.new("RGB", (8, 8), (i, i, i)) for i in range(400)]
    examples = [Example(im, "", str(i), i) for i, im in enumerate(images)]
    for p in (0.0, 0.3):
        enc = FrozenEncoders(model, ObjectiveSpec(condition_dropout=p), torch.device("cpu"))
        conds = recon_conditions(enc, examples, [example_rng(0, 0, i) for i in range(400)])
        empty = sum(not c.segments for c in conds) / len(conds)
        assert abs(empty - p) < 0.06
    kept = [c for c in conds if c.segments]
    assert len({c.segments[0] for c in kept}) > 50  # instructions vary per example
    assert all(c.segments[1].embeds.shape == (model.num_tokens, model.hidden) for c in kept)
    # instruction diversity: the first N instructions only (1 = one fixed phrase)
    for count in (1, 3):
        enc = FrozenEncoders(model, ObjectiveSpec(instructions=count), torch.device("cpu"))
        conds = recon_conditions(enc, examples[:100], [example_rng(0, 0, i) for i in range(100)])
        used = {c.segments[0] for c in conds if c.segments}
        assert used == set(RECONSTRUCTION_INSTRUCTIONS[:count])


def test_cache_hit_miss_keyed_by_content_and_encoder_fingerprint(tmp_path):
    model = ToyUnifiedModel()
    fp = module_fingerprint(model.vision)
    cache = FrozenOutputCache(tmp_path)
    value = torch.randn(4, 16)
    assert cache.get("understanding", fp, "abc") is None
    cache.put("understanding", fp, "abc", value[:2])
    assert torch.equal(cache.get("understanding", fp, "abc"), value[:2])
    assert cache.get("understanding", fp, "abd") is None  # other content
    assert cache.stats() == {"hits": 1, "misses": 2}
    assert module_fingerprint(ToyUnifiedModel().vision) == fp  # same weights, same key
    with torch.no_grad():
        model.vision[0].weight[0, 0] += 1e-3
    changed = module_fingerprint(model.vision)
    assert changed != fp
    assert cache.get("understanding", changed, "abc") is None  # new weights: a miss, never stale


def test_cache_in_training_same_losses_hits_on_later_epochs_and_invalidates(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 8)
    raw = toy_recipe_dict(root, tmp_path / "nocache", steps=6)  # 6 x 4 = 3 epochs of 8
    plain = train(recipe_from_dict(raw))
    raw_cached = toy_recipe_dict(root, tmp_path / "cached", steps=6)
    raw_cached["data"]["cache_dir"] = str(tmp_path / "cache")
    cached = train(recipe_from_dict(raw_cached))
    assert cached.losses == plain.losses  # cached outputs are the computed ones, bit for bit
    # epoch 1 misses both kinds for 8 images; epochs 2-3 hit them
    assert cached.cache == {"hits": 32, "misses": 16}
    again = train(
        recipe_from_dict({**raw_cached, "train": {**raw_cached["train"], "output_dir": str(tmp_path / "c2")}})
    )
    assert again.cache["misses"] == 0
    # another encoder (different weights): every understanding entry misses
    raw_cached["model"]["kwargs"] = {"seed": 1}
    raw_cached["train"]["output_dir"] = str(tmp_path / "c3")
    other = train(recipe_from_dict(raw_cached))
    assert other.cache["misses"] == 16
