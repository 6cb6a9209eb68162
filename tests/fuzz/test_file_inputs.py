"""Property-based fuzzing of every file the CLI reads: item files, result records, images. Whatever the
bytes, a reader returns a valid value or raises the documented error (ValueError / FileNotFoundError)
naming the file, and the CLI exits with a documented code without a traceback."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from reca_eval import registry
from reca_eval.cli import app
from reca_eval.core.images import load_rgb
from reca_eval.core.records import RunRecord, parse_record

BENCHES = ("shapes-geneval", "shapes-dpg", "shapes-edit")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _good_line(name: str) -> dict:
    path = registry.get(name).default_items()
    if path.suffix == ".csv":
        path = path.with_name("items.jsonl")
    return json.loads(path.read_text().splitlines()[0])


def _write(data: bytes, suffix: str) -> Path:
    fh = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    fh.write(data)
    fh.close()
    return Path(fh.name)


@FUZZ
@given(name=st.sampled_from(BENCHES), data=st.binary(max_size=400))
def test_item_file_bytes(name, data):
    bench = registry.get(name)
    path = _write(data, bench.default_items().suffix)
    try:
        items = bench.load_items(path)
        assert isinstance(items, list) and items
    except ValueError as exc:
        assert path.name in str(exc)
    finally:
        path.unlink()


@FUZZ
@given(
    name=st.sampled_from(("shapes-geneval", "shapes-edit")),
    key=st.text(min_size=1, max_size=12),
    value=json_values,
    drop=st.booleans(),
)
def test_item_line_with_a_fuzzed_field(name, key, value, drop):
    """A good item with one field replaced (or removed): loaded as valid or refused naming file and line."""
    item = _good_line(name)
    target = key
    if drop and item:
        target = sorted(item)[len(key) % len(item)]
        item.pop(target)
    else:
        item[target] = value
    path = _write((json.dumps(item) + "\n").encode(), ".jsonl")
    try:
        registry.get(name).load_items(path)
    except ValueError as exc:
        assert f"{path}:1" in str(exc) or path.name in str(exc)
    finally:
        path.unlink()


@FUZZ
@given(data=st.binary(max_size=300))
def test_record_bytes(data):
    path = _write(data, ".json")
    try:
        parse_record(path)
    except ValueError:
        pass
    finally:
        path.unlink()


@FUZZ
@given(
    key=st.sampled_from(
        ["scores", "label", "model", "images_scored", "skips", "benchmark", "figures_sha256"]
    ),
    value=json_values,
)
def test_record_with_a_fuzzed_field_is_refused_or_strict(key, value):
    record = RunRecord("shapes-geneval", "1.1", "x", "m", {"overall": 0.5}, 1, 0).to_json()
    record[key] = value
    try:
        parsed = RunRecord.from_json(record)
    except ValueError:
        return
    text = json.dumps(parsed.to_json(), allow_nan=False)  # what write_run writes: strict JSON
    assert math.isfinite(json.loads(text)["scores"]["overall"])


@FUZZ
@given(data=st.binary(max_size=600), size=st.sampled_from([None, (8, 8)]))
def test_image_bytes_are_an_image_or_a_reason(data, size):
    path = _write(data, ".png")
    try:
        image, reason = load_rgb(path, size)
        assert (image is None) == bool(reason)
    finally:
        path.unlink()


@FUZZ
@given(cut=st.integers(min_value=0, max_value=200), flip=st.integers(min_value=0, max_value=199))
def test_damaged_png_is_an_image_or_a_reason(cut, flip):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[flip % len(data)] ^= 0xFF
    path = _write(bytes(data[: len(data) - cut % len(data)]), ".png")
    try:
        image, reason = load_rgb(path, (8, 8))
        assert (image is None) == bool(reason)
        assert image is None or image.size == (8, 8)
    finally:
        path.unlink()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(BENCHES), data=st.binary(max_size=200))
def test_validate_cli_exits_documented(name, data):
    path = _write(data, ".jsonl" if name != "shapes-dpg" else ".csv")
    try:
        result = CliRunner().invoke(app, ["validate", name, "--items", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code in (0, 2)
    finally:
        path.unlink()
