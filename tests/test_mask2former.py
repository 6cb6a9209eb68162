"""GenEval's Mask2Former on mmcv-lite: the _ext placeholder, the PyTorch deformable-attention path,
detections from a tiny random model, mmdet 2.x -> 3.x checkpoint conversion, and weight-path errors."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet", reason="needs the geneval extra (mmdet 3.3 + mmcv-lite)")

from PIL import Image  # noqa: E402

from reca_eval.core.detections import Detection  # noqa: E402
from reca_eval.scorers import mask2former as m2f  # noqa: E402
from reca_eval.scorers import mmcv_shim, weights  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
IMAGE_HW = (96, 128)
TINY_SCALE = (128, 96)  # (longer-side cap, shorter side) = the image's own size: no resize in tests


def _tiny_model(seed: int):
    torch.manual_seed(seed)
    return m2f.build_mask2former(tiny=True, test_scale=TINY_SCALE)


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_model(0)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    pixels[20:70, 30:90] = (220, 30, 30)  # some structure, so masks are not all alike
    return Image.fromarray(pixels)


def _flat(detections: dict[str, list[Detection]]) -> list[tuple[str, Detection]]:
    return [(name, d) for name, dets in detections.items() for d in dets]


# --- mmcv shim ---------------------------------------------------------------------------------------


def test_placeholder_is_idempotent_and_behaves_like_a_module():
    if not mmcv_shim.install_mmcv_ext_placeholder():
        pytest.skip("a compiled mmcv (full build) is installed: no placeholder needed")
    ext = sys.modules["mmcv._ext"]
    assert mmcv_shim.install_mmcv_ext_placeholder() is True
    assert sys.modules["mmcv._ext"] is ext
    assert ext.__spec__ is not None and ext.__spec__.name == "mmcv._ext"
    assert importlib.util.find_spec("mmcv._ext") is ext.__spec__
    with pytest.raises(AttributeError):
        ext.__file__  # noqa: B018
    assert not hasattr(ext, "__wrapped__")
    with pytest.raises(mmcv_shim.CompiledOpUnavailable, match="nms"):
        ext.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    importlib.import_module("mmcv.ops")  # imports every compiled-op wrapper without error


def _deform_attn_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 8], [3, 4]])
    level_start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    bs, heads, dims, queries, points = 2, 4, 8, 5, 3
    value = torch.randn(bs, int(shapes.prod(1).sum()), heads, dims, generator=g)
    locations = torch.rand(bs, queries, heads, len(shapes), points, 2, generator=g)
    weights_ = torch.rand(bs, queries, heads, len(shapes), points, generator=g).softmax(-1)
    return value, shapes, level_start, locations, weights_


def test_forced_pytorch_path_replaces_the_compiled_kernel_call():
    mmcv_shim.force_pytorch_deformable_attention()
    mmcv_shim.force_pytorch_deformable_attention()  # idempotent
    import mmcv.ops.multi_scale_deform_attn as msda

    value, shapes, level_start, locations, attn_weights = _deform_attn_inputs()
    # This is the call mmcv makes on a CUDA tensor; unpatched it would reach the placeholder and raise.
    got = msda.MultiScaleDeformableAttnFunction.apply(value, shapes, level_start, locations, attn_weights, 64)
    expected = msda.multi_scale_deformable_attn_pytorch(value, shapes, locations, attn_weights)
    assert got.shape == (2, 5, 4 * 8)
    assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deformable_attention_runs_on_gpu_through_pytorch_path():
    mmcv_shim.force_pytorch_deformable_attention()
    import mmcv.ops.multi_scale_deform_attn as msda

    attn = msda.MultiScaleDeformableAttention(
        embed_dims=32, num_heads=4, num_levels=2, num_points=3, dropout=0.0, batch_first=True
    ).eval()
    value, shapes, level_start, _, _ = _deform_attn_inputs()
    query = torch.randn(2, 5, 32)
    v = torch.randn(2, value.shape[1], 32)
    ref = torch.rand(2, 5, 2, 2)
    cpu = attn(query, value=v, reference_points=ref, spatial_shapes=shapes, level_start_index=level_start)
    gpu = attn.cuda()(
        query.cuda(),
        value=v.cuda(),
        reference_points=ref.cuda(),
        spatial_shapes=shapes.cuda(),
        level_start_index=level_start.cuda(),
    )
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# --- detection ---------------------------------------------------------------------------------------


def test_coco_class_names_match_geneval_object_names():
    names_file = BENCHMARKS / "geneval" / "object_names.txt"
    if not names_file.exists():
        pytest.skip(f"GenEval metadata not found at {names_file}")
    assert list(m2f.COCO_CLASSES) == [
        line.strip() for line in names_file.read_text().splitlines() if line.strip()
    ]


def test_tiny_model_detections_have_the_right_types_and_shapes(tiny_model, image):
    detections = m2f.detect(tiny_model, image)
    assert list(detections) == list(m2f.COCO_CLASSES)
    flat = _flat(detections)
    # mmdet keeps the top max_per_image (100) of queries x classes.
    assert len(flat) == tiny_model.test_cfg["max_per_image"]
    width, height = image.size
    for _, det in flat:
        assert isinstance(det, Detection)
        assert len(det.box) == 4 and all(isinstance(v, float) for v in det.box)
        x1, y1, x2, y2 = det.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert isinstance(det.score, float) and 0.0 <= det.score <= 1.0
        assert det.mask.dtype == bool and det.mask.shape == (height, width)
        if det.mask.any():  # the box is the mask's bounding box (mmdet's mask2bbox)
            ys, xs = np.nonzero(det.mask)
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    for dets in detections.values():
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True)


def test_detect_maps_boxes_and_masks_back_to_the_input_size(tiny_model):
    # An image larger than the test scale is resized down for the network; outputs come back full size.
    big = Image.new("RGB", (256, 192), color=(40, 120, 200))
    flat = _flat(m2f.detect(tiny_model, big))
    assert flat and all(d.mask.shape == (192, 256) for _, d in flat)
    assert all(d.box[2] <= 256 and d.box[3] <= 192 for _, d in flat)


def test_a_batch_detects_what_each_image_detects_alone(tiny_model, image):
    """detect_many runs the images' forward passes in one batch; each image gets what detect (GenEval's
    one-image loop) gives it: the same classes in the same order, scores and boxes to float rounding,
    the same masks."""
    rng = np.random.default_rng(1)
    others = [Image.fromarray(rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)) for _ in range(2)]
    images = [image, *others]
    batched = m2f.detect_many(tiny_model, images)
    assert len(batched) == 3 and m2f.detect_many(tiny_model, []) == []
    for alone, together in zip([m2f.detect(tiny_model, im) for im in images], batched, strict=True):
        a, b = _flat(alone), _flat(together)
        assert [name for name, _ in a] == [name for name, _ in b]
        np.testing.assert_allclose([d.score for _, d in b], [d.score for _, d in a], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([d.box for _, d in b], [d.box for _, d in a], atol=1e-3)
        assert all(np.array_equal(x.mask, y.mask) for (_, x), (_, y) in zip(a, b, strict=True))
    # a different image detects differently: the comparison above can fail
    assert [d.score for _, d in _flat(batched[0])] != [d.score for _, d in _flat(batched[1])]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_detector_on_gpu_matches_cpu(image):
    cpu = _tiny_model(seed=2)
    gpu = _tiny_model(seed=2).cuda()
    on_cpu, on_gpu = _flat(m2f.detect(cpu, image)), _flat(m2f.detect(gpu, image))
    assert len(on_gpu) == len(on_cpu)
    np.testing.assert_allclose([d.score for _, d in on_gpu], [d.score for _, d in on_cpu], atol=1e-3)
    assert isinstance(on_gpu[0][1].mask, np.ndarray) and on_gpu[0][1].mask.shape == IMAGE_HW


# --- checkpoint conversion -----------------------------------------------------------------------------


def _outputs(model, image):
    return [(name, d.box, d.score) for name, d in _flat(m2f.detect(model, image))]


def _assert_same_outputs(a, b):
    assert [(n, box) for n, box, _ in a] == [(n, box) for n, box, _ in b]
    np.testing.assert_allclose([s for *_, s in a], [s for *_, s in b], atol=1e-4)


def test_mmdet2_keys_are_the_documented_four_renames(tiny_model):
    sd3 = tiny_model.state_dict()
    sd2 = m2f.convert_mmdet3_to_mmdet2_state_dict(sd3)
    changed = {k3: k2 for k3, k2 in zip(sd3, sd2, strict=True) if k3 != k2}
    assert changed, "the inverse mapping renamed nothing"
    enc = "panoptic_head.pixel_decoder.encoder.layers.0."
    dec = "panoptic_head.transformer_decoder.layers.0."
    assert changed[enc + "self_attn.value_proj.weight"] == enc + "attentions.0.value_proj.weight"
    assert changed[enc + "ffn.layers.1.weight"] == enc + "ffns.0.layers.1.weight"
    assert changed[dec + "cross_attn.attn.in_proj_weight"] == dec + "attentions.0.attn.in_proj_weight"
    assert changed[dec + "self_attn.attn.in_proj_weight"] == dec + "attentions.1.attn.in_proj_weight"
    assert changed[dec + "ffn.layers.0.0.weight"] == dec + "ffns.0.layers.0.0.weight"
    # Nothing outside those layers moves (the Swin backbone's own ``ffn`` keeps its name in 2.x too),
    # and no 3.x sub-layer name survives in the head.
    assert all(
        ".layers." in k and ("pixel_decoder.encoder" in k or "transformer_decoder" in k) for k in changed
    )
    head = [k for k in sd2 if k.startswith("panoptic_head.")]
    assert not [k for k in head if any(f".{n}." in k for n in ("self_attn", "cross_attn", "ffn"))]
    assert m2f.convert_mmdet2_state_dict(sd3).keys() == sd3.keys()  # 3.x keys pass through


def test_mmdet2_checkpoint_converts_back_and_loads_strictly_with_identical_outputs(
    tiny_model, image, tmp_path
):
    sd2 = m2f.convert_mmdet3_to_mmdet2_state_dict(tiny_model.state_dict())
    checkpoint = tmp_path / "mask2former_mmdet2.pth"
    torch.save(
        {"meta": {"CLASSES": m2f.COCO_CLASSES, "mmdet_version": "2.25.0"}, "state_dict": sd2}, checkpoint
    )
    fresh = _tiny_model(seed=1)
    before = _outputs(fresh, image)
    m2f.load_checkpoint_into(fresh, checkpoint)
    after, reference = _outputs(fresh, image), _outputs(tiny_model, image)
    _assert_same_outputs(after, reference)
    assert [n for n, *_ in before] != [n for n, *_ in reference]  # the load did change the model


def test_swapped_cross_and_self_attention_loads_but_changes_outputs(tiny_model, image):
    # Same shapes, so a strict load cannot catch the swap; only the outputs can.
    sd2 = m2f.convert_mmdet3_to_mmdet2_state_dict(tiny_model.state_dict())
    swapped = {}
    for key, value in sd2.items():
        if "transformer_decoder.layers" in key and ".attentions." in key:
            key = key.replace(".attentions.0.", ".attentions.X.").replace(".attentions.1.", ".attentions.0.")
            key = key.replace(".attentions.X.", ".attentions.1.")
        swapped[key] = value
    wrong = _tiny_model(seed=1)
    wrong.load_state_dict(m2f.convert_mmdet2_state_dict(swapped), strict=True)
    wrong_out, reference = _outputs(wrong, image), _outputs(tiny_model, image)
    differs = [(n, b) for n, b, _ in wrong_out] != [(n, b) for n, b, _ in reference] or not np.allclose(
        [s for *_, s in wrong_out], [s for *_, s in reference], atol=1e-4
    )
    assert differs


def test_a_missing_renamed_key_fails_the_strict_load(tiny_model, tmp_path):
    sd2 = m2f.convert_mmdet3_to_mmdet2_state_dict(tiny_model.state_dict())
    sd2 = {
        k.replace(".ffns.0.", ".ffnz.0."): v for k, v in sd2.items()
    }  # a rename the converter does not know
    checkpoint = tmp_path / "bad.pth"
    torch.save({"state_dict": sd2}, checkpoint)
    with pytest.raises(ValueError, match=r"bad\.pth.*does not fit"):
        m2f.load_checkpoint_into(_tiny_model(seed=1), checkpoint)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    checkpoint = tmp_path / "garbage.pth"
    checkpoint.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth"):
        m2f.load_checkpoint_into(_tiny_model(seed=1), checkpoint)


# --- weight paths ----------------------------------------------------------------------------------------


def test_missing_detector_weights_message_names_path_env_var_and_source(tmp_path, monkeypatch):
    monkeypatch.delenv(weights.MASK2FORMER.env_var, raising=False)
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(tmp_path / "cache"))
    with pytest.raises(weights.MissingWeightsError) as info:
        m2f.load_detector()
    message = str(info.value)
    assert str(tmp_path / "cache" / weights.MASK2FORMER.name) in message
    assert "RECA_EVAL_MASK2FORMER" in message
    assert "djghosh13/geneval/blob/main/evaluation/download_models.sh" in message
    assert isinstance(info.value, FileNotFoundError)


def test_weight_path_precedence_explicit_then_env_then_cache(tmp_path, monkeypatch):
    explicit, from_env, cache = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "cache"
    cached = cache / weights.MASK2FORMER.name
    for p in (explicit, from_env, cached):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    monkeypatch.setenv(weights.CACHE_DIR_ENV, str(cache))
    monkeypatch.setenv(weights.MASK2FORMER.env_var, str(from_env))
    assert weights.resolve_weight_path(weights.MASK2FORMER, explicit) == explicit
    assert weights.resolve_weight_path(weights.MASK2FORMER) == from_env
    monkeypatch.delenv(weights.MASK2FORMER.env_var)
    assert weights.resolve_weight_path(weights.MASK2FORMER) == cached
    # A set but wrong env var is an error naming it, not a fall-through to the cached file.
    monkeypatch.setenv(weights.MASK2FORMER.env_var, str(tmp_path / "typo.pth"))
    with pytest.raises(weights.MissingWeightsError, match=r"typo\.pth.*\$RECA_EVAL_MASK2FORMER"):
        weights.resolve_weight_path(weights.MASK2FORMER)


# --- no pickle code runs ---------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: what a tampered checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_with_a_code_running_pickle_is_refused_before_anything_runs(tiny_model, tmp_path):
    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "tampered.pth"
    torch.save({"meta": {"note": _Payload(marker)}, "state_dict": tiny_model.state_dict()}, checkpoint)
    with pytest.raises(ValueError, match=r"tampered\.pth: refused.*io\.open"):
        m2f.load_checkpoint_into(_tiny_model(seed=1), checkpoint)
    assert not marker.exists()
    # the same pickle through a plain torch.load does run it: the refusal is what protects the user
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()


def test_mmengine_metadata_and_numpy_load_as_inert_data(tiny_model, image, tmp_path, monkeypatch):
    import types

    # A class named like mmengine's message-hub buffer; its module is gone when the checkpoint is read,
    # so a load that imported or ran it would fail.
    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self):
            self._log_history = np.arange(4.0)

        def __setstate__(self, state):
            raise AssertionError("the real class must never be rebuilt")

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    checkpoint = tmp_path / "mmengine.pth"
    torch.save(
        {
            "meta": {
                "epoch": np.int64(50),
                "seed": np.float32(0.5),
                "dataset_meta": {"classes": m2f.COCO_CLASSES},
            },
            "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}},
            "state_dict": tiny_model.state_dict(),
        },
        checkpoint,
    )
    monkeypatch.delitem(sys.modules, module.__name__)
    fresh = m2f.load_checkpoint_into(_tiny_model(seed=1), checkpoint)
    _assert_same_outputs(_outputs(fresh, image), _outputs(tiny_model, image))


def test_checkpoint_converted_once_to_safetensors_loads_with_identical_outputs(tiny_model, image, tmp_path):
    sd2 = m2f.convert_mmdet3_to_mmdet2_state_dict(tiny_model.state_dict())
    torch.save({"meta": {"mmdet_version": "2.25.0"}, "state_dict": sd2}, tmp_path / "m2f.pth")
    out = m2f.convert_to_safetensors(tmp_path / "m2f.pth", tmp_path / "m2f.safetensors")
    fresh = m2f.load_checkpoint_into(_tiny_model(seed=1), out)
    _assert_same_outputs(_outputs(fresh, image), _outputs(tiny_model, image))
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match=r"broken\.safetensors"):
        m2f.load_checkpoint_into(_tiny_model(seed=1), tmp_path / "broken.safetensors")
