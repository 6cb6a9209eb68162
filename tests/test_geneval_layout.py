"""The official GenEval folder layout: writing it, scoring it, and what counts as a skip or an error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.benchmarks.geneval.layout import score_geneval_folder, write_geneval_folder
from reca_eval.core.detections import Detection
from tests.test_geneval_protocol import GENEVAL_DIR, plant_detections

SIZE = (64, 64)
ITEMS = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {
        "tag": "colors",
        "include": [{"class": "car", "count": 1, "color": "pink"}],
        "prompt": "a photo of a pink car",
    },
    {
        "tag": "counting",
        "include": [{"class": "clock", "count": 2}],
        "exclude": [{"class": "clock", "count": 3}],
        "prompt": "a photo of two clocks",
    },
]
# (item, sample) -> whether the planted detections satisfy the item.
TRUTH = {(0, 0): True, (0, 1): False, (1, 0): True, (1, 1): True, (2, 0): False, (2, 1): True}


class PlantedDetector:
    """A detector that knows each test image by its colour: pixel (0, 0) encodes (item, sample)."""

    def __init__(self, items: list[dict], truth: dict[tuple[int, int], bool]):
        self.by_colour: dict[tuple[int, int, int], dict[str, list[Detection]]] = {}
        for (index, k), correct in truth.items():
            planted = plant_detections(items[index])
            if not correct:  # the first class's objects vanish
                planted[items[index]["include"][0]["class"]] = []
            self.by_colour[colour_key(index, k)] = planted
        self.calls = 0

    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        self.calls += 1
        return self.by_colour[image.getpixel((0, 0))]


def colour_key(index: int, k: int) -> tuple[int, int, int]:
    return (index % 256, index // 256, 10 + k)


def colour_from_attributes(image: Image.Image, classname: str, objects: list[Detection]) -> list[str]:
    return [o.attributes["color"] for o in objects]


def images_for(truth: dict[tuple[int, int], bool], size=SIZE) -> dict[int, list[Image.Image]]:
    images: dict[int, list[Image.Image]] = {}
    for index, k in sorted(truth):
        images.setdefault(index, []).append(Image.new("RGB", size, colour_key(index, k)))
    return images


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_geneval_folder(ITEMS, images_for(TRUTH), tmp_path / "images")
    return tmp_path / "images"


def score(folder: Path, items=ITEMS, truth=TRUTH, **kwargs):
    options = {"images_per_prompt": 2, "expected_size": SIZE, "progress": False} | kwargs
    return score_geneval_folder(
        items, folder, PlantedDetector(items, truth), colour_from_attributes, **options
    )


def skip_reasons(output, folder: Path) -> dict[str, str]:
    return {Path(s.path).relative_to(folder).as_posix(): s.reason for s in output.skips}


def test_written_layout_is_the_official_one(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["00000", "00001", "00002"]
    assert json.loads((folder / "00001" / "metadata.jsonl").read_text()) == ITEMS[1]
    assert sorted(p.name for p in (folder / "00002" / "samples").iterdir()) == ["00000.png", "00001.png"]
    assert not list(folder.rglob(".*"))  # no temp files left behind


def test_round_trip_scores_every_sample_against_its_own_item(folder):
    output = score(folder)
    assert output.skips == []
    rows = output.rows
    assert list(rows.columns) == ["item_id", "sample", "category", "score", "reason", "prompt"]
    assert list(zip(rows["item_id"], rows["sample"], strict=True)) == [
        (f"{i:05d}", k) for i, k in sorted(TRUTH)
    ]
    assert list(rows["score"]) == [1.0 if TRUTH[key] else 0.0 for key in sorted(TRUTH)]
    assert list(rows["category"]) == ["single_object"] * 2 + ["colors"] * 2 + ["counting"] * 2
    assert rows.loc[1, "reason"] == "expected bench>=1, found 0"
    assert rows.loc[0, "reason"] == ""
    assert rows.loc[4, "prompt"] == "a photo of two clocks"
    assert [p.relative_to(folder).as_posix() for p in output.images] == [
        f"{i:05d}/samples/{k:05d}.png" for i, k in sorted(TRUTH)
    ]
    assert geneval.aggregate(rows, None) == {
        "single_object": 0.5,
        "colors": 1.0,
        "counting": 0.5,
        "overall": 2 / 3,
    }


def test_missing_folder_counts_every_expected_sample_as_skip(folder):
    shutil.rmtree(folder / "00001")
    output = score(folder)
    assert skip_reasons(output, folder) == {
        "00001/samples/00000.png": "missing sample (no item folder)",
        "00001/samples/00001.png": "missing sample (no item folder)",
    }
    assert list(output.rows["item_id"]) == ["00000", "00000", "00002", "00002"]


def test_missing_sample_and_fewer_samples_than_asked(folder):
    (folder / "00002" / "samples" / "00001.png").unlink()
    output = score(folder)
    assert skip_reasons(output, folder) == {"00002/samples/00001.png": "missing sample"}
    assert len(output.rows) == 5
    output = score(folder, images_per_prompt=3)
    assert len(output.skips) == 4  # sample 2 of every item, and the deleted one
    assert all(s.reason == "missing sample" for s in output.skips)


def test_corrupt_truncated_and_wrong_size_images_are_skips(folder):
    (folder / "00000" / "samples" / "00000.png").write_bytes(b"this is not a png")
    truncated = folder / "00001" / "samples" / "00000.png"
    image = Image.effect_noise(SIZE, 50).convert("RGB")
    image.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    Image.new("RGB", (32, 64), colour_key(2, 0)).save(folder / "00002" / "samples" / "00000.png")
    output = score(folder)
    reasons = skip_reasons(output, folder)
    assert sorted(reasons) == [
        "00000/samples/00000.png",
        "00001/samples/00000.png",
        "00002/samples/00000.png",
    ]
    assert reasons["00000/samples/00000.png"].startswith("unreadable image")
    assert reasons["00001/samples/00000.png"].startswith("unreadable image")
    assert reasons["00002/samples/00000.png"] == "wrong size 32x64, expected 64x64"
    assert list(output.rows["sample"]) == [1, 1, 1]
    assert len(output.images) == 3
    # Without a size check the 32x64 image is scored.
    assert len(score(folder, expected_size=None).rows) == 4


def test_metadata_mismatch_is_an_error_naming_the_file(folder):
    path = folder / "00001" / "metadata.jsonl"
    path.write_text(json.dumps(ITEMS[1] | {"prompt": "a photo of a pink bus"}))
    with pytest.raises(ValueError, match="metadata differs from item 1") as info:
        score(folder)
    assert str(info.value).startswith(str(path))
    # Folders in another order (a different prompt set) fail the same way.
    with pytest.raises(ValueError, match="00000/metadata.jsonl"):
        score(folder, items=[ITEMS[1], ITEMS[0], ITEMS[2]])


def test_missing_or_broken_folder_metadata_is_an_error(folder):
    path = folder / "00002" / "metadata.jsonl"
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not one JSON object") as info:
        score(folder)
    assert str(info.value).startswith(str(path))
    path.unlink()
    with pytest.raises(ValueError, match="00002/metadata.jsonl: missing"):
        score(folder)


def test_unexpected_entries_are_counted_skips_and_grid_is_ignored(folder):
    (folder / "00007").mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "00000" / "grid.png").write_bytes(b"preview")
    (folder / "00000" / "extra.json").write_text("{}")
    Image.new("RGB", SIZE, colour_key(0, 0)).save(folder / "00000" / "samples" / "00000.jpg")
    Image.new("RGB", SIZE, colour_key(0, 0)).save(folder / "00000" / "samples" / "sample.png")
    output = score(folder)
    assert skip_reasons(output, folder) == {
        "00007": "unexpected folder (only 3 items)",
        "notes.txt": "unexpected entry (not an item folder)",
        "00000/extra.json": "unexpected entry in item folder",
        "00000/samples/00000.jpg": "unexpected file (samples are <k>.png)",
        "00000/samples/sample.png": "unexpected file (samples are <k>.png)",
    }
    assert len(output.rows) == 6


def test_every_numbered_sample_is_scored_as_the_official_does(folder):
    # The official scores every samples/ file matching re.match(r"\d+\.png"), not images_per_prompt of
    # them: sample 5 counts, and so does a name that only starts like one.
    Image.new("RGB", SIZE, colour_key(0, 0)).save(folder / "00000" / "samples" / "00005.png")
    (folder / "00002" / "samples" / "00001.png").rename(folder / "00002" / "samples" / "00007.png.bak")
    truth = TRUTH | {(0, 5): True, (2, 7): TRUTH[(2, 1)]}
    detector = PlantedDetector(ITEMS, truth)
    output = score_geneval_folder(
        ITEMS,
        folder,
        detector,
        colour_from_attributes,
        images_per_prompt=2,
        expected_size=SIZE,
        progress=False,
    )
    assert skip_reasons(output, folder) == {"00002/samples/00001.png": "missing sample"}
    assert list(zip(output.rows["item_id"], output.rows["sample"], strict=True)) == [
        ("00000", 0),
        ("00000", 1),
        ("00000", 5),
        ("00001", 0),
        ("00001", 1),
        ("00002", 0),
        ("00002", 7),
    ]
    assert output.scorer["samples_per_prompt"] == {"2": 2, "3": 1}
    # The task score is the mean over images, as officially: item 0 now weighs 3 images.
    assert geneval.aggregate(output.rows, None)["single_object"] == pytest.approx(2 / 3)


def test_samples_per_prompt_counts_prompts_with_nothing_scored(folder):
    shutil.rmtree(folder / "00001")
    assert score(folder).scorer["samples_per_prompt"] == {"0": 1, "2": 2}


def test_exif_orientation_is_applied_before_detection(folder):
    # A 64x32 file tagged "rotate 90" is a 32x64 image upright: the detector and the size check see that.
    path = folder / "00000" / "samples" / "00000.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    Image.new("RGB", (64, 32), colour_key(0, 0)).save(path, exif=exif)
    sizes = []

    def detector(image):
        sizes.append(image.size)
        return {}

    output = score_geneval_folder(
        ITEMS,
        folder,
        detector,
        colour_from_attributes,
        images_per_prompt=2,
        expected_size=None,
        progress=False,
    )
    assert sizes[0] == (32, 64)
    assert len(output.rows) == 6
    output = score(folder, expected_size=(32, 64))
    assert skip_reasons(output, folder)["00000/samples/00001.png"] == "wrong size 64x64, expected 32x64"
    assert "00000/samples/00000.png" not in skip_reasons(output, folder)


def test_plain_integer_names_are_accepted_but_not_twice(folder):
    (folder / "00001").rename(folder / "1")
    (folder / "1" / "samples" / "00001.png").rename(folder / "1" / "samples" / "1.png")
    output = score(folder)
    assert output.skips == []
    assert list(output.rows["score"]) == [1.0 if TRUTH[key] else 0.0 for key in sorted(TRUTH)]
    assert list(output.rows["item_id"])[2:4] == ["00001", "00001"]
    shutil.copy(folder / "1" / "samples" / "1.png", folder / "1" / "samples" / "0001.png")
    with pytest.raises(ValueError, match="both '0001.png' and '1.png' name index 1"):
        score(folder)


def test_write_rejects_images_for_unknown_items(tmp_path):
    with pytest.raises(ValueError, match=r"item indices \[3\]"):
        write_geneval_folder(ITEMS, {3: [Image.new("RGB", SIZE)]}, tmp_path)


def test_all_real_items_round_trip(tmp_path):
    path = GENEVAL_DIR / "evaluation_metadata.jsonl"
    if not path.exists():
        pytest.skip(f"official GenEval metadata not found at {path}")
    items = geneval.load_metadata(path)
    truth = {(i, 0): i % 5 != 0 for i in range(len(items))}
    write_geneval_folder(items, images_for(truth), tmp_path / "images")
    detector = PlantedDetector(items, truth)
    output = score_geneval_folder(
        items,
        tmp_path / "images",
        detector,
        colour_from_attributes,
        images_per_prompt=1,
        expected_size=SIZE,
        progress=True,
    )
    assert output.skips == []
    assert detector.calls == len(items) == len(output.rows) == 553
    assert list(output.rows["score"]) == [1.0 if truth[(i, 0)] else 0.0 for i in range(len(items))]
