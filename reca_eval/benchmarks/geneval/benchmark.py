"""GenEval (short and long prompts): Mask2Former detection + CLIP colour, scored by the official rules.

Items are the official metadata file, never shipped: ``--items PATH`` or the data folder
(``$RECA_EVAL_DATA``), where ``reca-eval fetch geneval`` puts it. Scorer options
(``reca-eval run geneval -o KEY=VALUE``): ``detector_weights`` (Mask2Former checkpoint; default
``$RECA_EVAL_MASK2FORMER``, then the weights cache), ``clip_weights`` (CLIP weights; default
``$RECA_EVAL_CLIP_VITL14``, then the cache), ``device`` (default auto: CUDA when available, else
the CPU with a warning of the expected time), ``images_per_prompt``
(default 4; samples below it that are missing are reported as skips, and every sample present is
scored, as officially). For smoke tests and small GPUs only: ``detector_arch`` (``swin-s``, the official, or
``tiny``: the small random-init architecture of ``build_mask2former(tiny=True)``),
``detector_test_scale`` (``LONGER,SHORTER``; official 1333,800) and ``clip_model`` (an open_clip
model name or a ``.json`` model config; official ``ViT-L-14``), ``clip_precision`` (``fp16-autocast``
or ``fp32``; default the official one for the device: fp16 autocast on CUDA, fp32 on CPU, see
:mod:`reca_eval.scorers.clip_colour`). The record's ``scorer`` names the arch, test scale, CLIP model,
its precision and each weight file's name, size and sha256; anything but the official set says
"NOT the official ..." in ``scorer["backend"]`` and ``official_architecture`` is false.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from reca_eval.benchmarks.geneval import layout as layouts_geneval
from reca_eval.benchmarks.geneval import rules as geneval
from reca_eval.core.records import package_versions
from reca_eval.core.spec import Benchmark, BenchmarkSpec, ScoreOutput, from_spec, official_items

OFFICIAL_DETECTOR_ARCH = "swin-s"
DETECTOR_ARCHS = ("swin-s", "tiny")
OFFICIAL_CLIP_MODEL = "ViT-L-14"


def _test_scale(value: Any) -> tuple[int, int]:
    """``detector_test_scale`` as (longer-side cap, shorter side): a pair, or the text "1333,800"."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        longer, shorter = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"option detector_test_scale must be 'LONGER,SHORTER' (e.g. 1333,800), got {value!r}"
        ) from None
    if not 0 < shorter <= longer:
        raise ValueError(f"option detector_test_scale needs 0 < shorter <= longer, got {value!r}")
    return longer, shorter


def _detector_batch(value: Any) -> int:
    """``detector_batch``: images per detector forward pass, 1..256 (1 = GenEval's one-image loop).
    Checked here too: a library call passes its options without the CLI's check against benchmark.yaml."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"option detector_batch takes int in [1, 256]; default 1; got {value!r}")
    return int(text)


def describe_weight_file(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of a weight file: what tells two scorers' weights apart in a record."""
    from reca_eval.core.records import sha256_file

    path = Path(path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


# CPU cost of the official detector per 512 px image, in core-seconds: 27-29 s on 2 cores
# (docs/performance.md, tests/perf/bench_detector.py); divided by the cores present for the estimate
# the CPU warning states (an overestimate on many cores: 1.9 s was measured on 16).
DETECTOR_CPU_CORE_SECONDS = 55.0


def _geneval_backend(
    options: dict[str, Any], n_images: int = 0
) -> tuple[Callable, Callable, Callable, dict[str, Any]]:
    """The detector (one image, and a batch of them) + colour classifier, loaded once per run from local
    weights, on CUDA when available (:func:`reca_eval.core.devices.scoring_device`; ``-o device=``
    overrides).

    Defaults are GenEval's own scorer; any other arch, CLIP model or test scale is recorded as
    "NOT the official ..." in the scorer, so a smoke run can never pass for an official number.
    """
    from reca_eval.core.devices import cpu_cores, scoring_device
    from reca_eval.scorers import clip_colour, mask2former
    from reca_eval.scorers.weights import CLIP_VITL14, MASK2FORMER, resolve_weight_path

    arch = str(options.get("detector_arch", OFFICIAL_DETECTOR_ARCH))
    if arch not in DETECTOR_ARCHS:
        raise ValueError(f"option detector_arch must be one of {DETECTOR_ARCHS}, got {arch!r}")
    device = scoring_device(
        options.get("device"),
        what=f"GenEval (Mask2Former {arch} + CLIP)",
        count=n_images,
        cpu_seconds_each=DETECTOR_CPU_CORE_SECONDS / cpu_cores() if arch == OFFICIAL_DETECTOR_ARCH else 0.5,
    )
    test_scale = _test_scale(options.get("detector_test_scale", mask2former.TEST_SCALE))
    clip_model = str(options.get("clip_model", OFFICIAL_CLIP_MODEL))
    detector_path = resolve_weight_path(MASK2FORMER, options.get("detector_weights"))
    clip_path = resolve_weight_path(CLIP_VITL14, options.get("clip_weights"))

    detector = mask2former.load_detector(
        detector_path, device=device, tiny=arch == "tiny", test_scale=test_scale
    )
    official_precision = clip_colour.official_precision(device)
    precision = str(options.get("clip_precision", official_precision))
    classifier = clip_colour.load_colour_classifier(
        clip_model, pretrained=clip_path, device=device, precision=precision
    )

    def detect(image: Image.Image):
        return mask2former.detect(detector, image)

    def detect_many(images: list[Image.Image]):
        return mask2former.detect_many(detector, images)

    def colour_of_image(image: Image.Image, classname: str, objects):
        return clip_colour.classify_colours(classifier, image, classname, objects)

    detector_official = arch == OFFICIAL_DETECTOR_ARCH and test_scale == tuple(mask2former.TEST_SCALE)
    clip_official = clip_model == OFFICIAL_CLIP_MODEL
    detector_name = f"mask2former-{arch}" + (
        "" if detector_official else f"@{test_scale[0]}x{test_scale[1]} (NOT the official detector)"
    )
    clip_name = f"clip-{Path(clip_model).name}" + (
        "" if clip_official else " (NOT the official colour classifier)"
    )
    if precision != official_precision:
        clip_name += f" ({precision}: NOT the official precision on {device}, {official_precision})"
    scorer = {
        "backend": f"{detector_name}+{clip_name}",
        "official_architecture": detector_official and clip_official,  # weights: see sha256
        "official_precision": precision == official_precision,
        "detector": {"arch": arch, "test_scale": list(test_scale), **describe_weight_file(detector_path)},
        "colour_classifier": {
            "model": clip_model,
            "precision": classifier.precision,
            **describe_weight_file(clip_path),
        },
        "device": device,
        "versions": package_versions(
            ("mmdet", "mmcv-lite", "mmengine", "open-clip-torch", "torch", "torchvision")
        ),
    }
    return detect, detect_many, colour_of_image, scorer


def _score_geneval(items: list[dict], image_dir: Path, options: dict[str, Any]) -> ScoreOutput:
    per_prompt = int(options.get("images_per_prompt", 4))
    batch = _detector_batch(options.get("detector_batch", 1))
    detect, detect_many, colour_of_image, scorer = _geneval_backend(options, n_images=len(items) * per_prompt)
    output = layouts_geneval.score_geneval_folder(
        items,
        image_dir,
        detect,
        colour_of_image,
        detect_many=detect_many if batch > 1 else None,
        batch_size=batch,
        images_per_prompt=per_prompt,
        expected_size=None,  # GenEval accepts any resolution; the detector rescales
        progress=options.get("progress", True),
    )
    output.scorer = {**output.scorer, **scorer, "detector_batch": batch}
    return output


def build(spec: BenchmarkSpec) -> Benchmark:
    return from_spec(
        spec,
        default_items=lambda: official_items(spec),
        load_items=geneval.load_metadata,
        score=_score_geneval,
        aggregate=geneval.aggregate,
        prompt_of=lambda item: item["prompt"],
        sample_path=layouts_geneval.sample_path,
        prepare_layout=layouts_geneval.prepare_geneval_folder,
    )
