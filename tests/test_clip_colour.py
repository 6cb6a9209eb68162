"""GenEval's CLIP colour classifier: crops, templates, batching, local weight loading, missing weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reca_eval.core.detections import crop_for_colour

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip", reason="needs the geneval extra (open-clip-torch)")

from PIL import Image  # noqa: E402

from reca_eval.core.detections import Detection  # noqa: E402
from reca_eval.scorers import clip_colour as cc  # noqa: E402
from reca_eval.scorers import weights  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
GREY = (153, 153, 153)  # #999
RGB_OF = {
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (139, 69, 19),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}


@pytest.fixture(scope="module")
def tiny_clip() -> cc.ColourClassifier:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP)
    preprocess = open_clip.image_transform(TINY_CLIP["vision_cfg"]["image_size"], is_train=False)
    return cc.colour_classifier_from_model(model, preprocess, open_clip.get_tokenizer("ViT-B-32"))


def _box_mask(hw: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def _scene() -> tuple[Image.Image, list[Detection]]:
    """A 64x64 image with a red and a blue square; each detection's box is larger than its mask."""
    pixels = np.full((64, 64, 3), (20, 200, 20), dtype=np.uint8)  # green surroundings
    pixels[8:24, 8:24] = RGB_OF["red"]
    pixels[36:60, 30:54] = RGB_OF["blue"]
    image = Image.fromarray(pixels)
    red = Detection(box=(4.0, 4.0, 28.0, 28.0), score=0.9, mask=_box_mask((64, 64), (8, 8, 24, 24)))
    blue = Detection(box=(26.0, 32.0, 58.0, 62.0), score=0.8, mask=_box_mask((64, 64), (30, 36, 54, 60)))
    return image, [red, blue]


def test_crop_puts_999_grey_outside_the_mask_and_cuts_to_the_box():
    image, (red, _) = _scene()
    crop = np.asarray(crop_for_colour(image, red))
    assert crop.shape == (24, 24, 3)  # the box, not the mask
    inside = _box_mask((24, 24), (4, 4, 20, 20))
    assert (crop[inside] == RGB_OF["red"]).all()
    assert (crop[~inside] == GREY).all()  # the green surroundings are gone


def test_crop_without_mask_keeps_the_pixels_and_a_wrong_mask_is_an_error():
    image, (red, _) = _scene()
    plain = np.asarray(crop_for_colour(image, Detection(box=red.box, score=1.0)))
    assert (plain[0, 0] == (20, 200, 20)).all() and (plain[12, 12] == RGB_OF["red"]).all()
    with pytest.raises(ValueError, match="mask shape"):
        crop_for_colour(image, Detection(box=red.box, score=1.0, mask=np.zeros((10, 10), dtype=bool)))


def test_text_classifier_uses_the_three_official_templates_and_is_cached(tiny_clip):
    seen: list[list[str]] = []
    clf = cc.ColourClassifier(
        model=tiny_clip.model,
        preprocess=tiny_clip.preprocess,
        tokenizer=lambda texts: seen.append(list(texts)) or tiny_clip.tokenizer(texts),
        device=tiny_clip.device,
    )
    weights_ = cc.text_classifier(clf, "dog")
    assert seen[0] == ["a photo of a red dog", "a photo of a red-colored dog", "a photo of a red object"]
    assert [texts[0].split()[4] for texts in seen] == list(cc.COLOURS)
    assert weights_.shape == (TINY_CLIP["embed_dim"], len(cc.COLOURS))
    torch.testing.assert_close(weights_.norm(dim=0), torch.ones(len(cc.COLOURS)))
    assert cc.text_classifier(clf, "dog") is weights_ and len(seen) == len(cc.COLOURS)  # cached
    assert not torch.equal(cc.text_classifier(clf, "cat"), weights_)  # per class name


def test_classify_colours_returns_one_valid_colour_per_detection_independent_of_batching(tiny_clip):
    image, (red, blue) = _scene()
    detections = [red, blue] * 10  # 20 > one batch of 16
    colours = cc.classify_colours(tiny_clip, image, "cup", detections)
    assert len(colours) == len(detections) and set(colours) <= set(cc.COLOURS)
    assert colours == [cc.classify_colours(tiny_clip, image, "cup", [d])[0] for d in detections]
    assert cc.classify_colours(tiny_clip, image, "cup", []) == []


class _ColourOracle(torch.nn.Module):
    """A stand-in CLIP that knows colours: text -> one-hot of the colour word; image -> nearest colour
    of the mean non-#999 pixel. With it, the classifier's plumbing (crop, mask, argmax, order) is exact."""

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(ids, len(cc.COLOURS)).float()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        refs = torch.tensor([RGB_OF[c] for c in cc.COLOURS], dtype=torch.float32)
        return torch.nn.functional.one_hot(torch.cdist(pixels, refs).argmin(1), len(cc.COLOURS)).float()


def _oracle_preprocess(image: Image.Image) -> torch.Tensor:
    pixels = np.asarray(image).reshape(-1, 3)
    foreground = pixels[(pixels != GREY).any(axis=1)]
    return torch.tensor(foreground.mean(axis=0), dtype=torch.float32)


def _oracle_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([next(i for i, c in enumerate(cc.COLOURS) if f" {c}" in t) for t in texts])


def test_classify_colours_reads_each_masked_object_in_order():
    clf = cc.colour_classifier_from_model(_ColourOracle(), _oracle_preprocess, _oracle_tokenizer)
    image, (red, blue) = _scene()
    assert cc.classify_colours(clf, image, "cup", [red, blue, red]) == ["red", "blue", "red"]


def test_load_colour_classifier_from_a_local_file(tiny_clip, tmp_path):
    config = tmp_path / "reca-test-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    checkpoint = tmp_path / "tiny_clip.bin"
    torch.save(tiny_clip.model.state_dict(), checkpoint)
    loaded = cc.load_colour_classifier("reca-test-tiny-clip", pretrained=checkpoint)
    torch.testing.assert_close(cc.text_classifier(loaded, "dog"), cc.text_classifier(tiny_clip, "dog"))
    image, detections = _scene()
    assert cc.classify_colours(loaded, image, "dog", detections) == cc.classify_colours(
        tiny_clip, image, "dog", detections
    )


def test_openai_vit_l14_is_built_with_quick_gelu():
    # OpenAI's weights were trained with QuickGELU; open_clip's plain ViT-L-14 config uses GELU.
    assert cc._uses_quick_gelu("ViT-L-14") is True
    assert open_clip.get_model_config("ViT-L-14").get("quick_gelu", False) is False


def test_missing_clip_weights_message_names_path_env_var_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CLIP_VITL14.env_var, str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(weights.MissingWeightsError) as info:
        cc.load_colour_classifier()
    message = str(info.value)
    assert str(tmp_path / "nowhere.safetensors") in message
    assert "$RECA_EVAL_CLIP_VITL14" in message
    assert "huggingface.co/timm/vit_large_patch14_clip_224.openai" in message


# --------------------------------------------------------------------------------------------------
# Precision: clip-benchmark 1.4.0's amp=True (GenEval's call) is CUDA fp16 autocast; on CPU, fp32.


def _clip_benchmark_colours(clf: cc.ColourClassifier, image: Image.Image, classname: str, detections):
    """clip-benchmark 1.4.0's zero_shot_classifier + run_classification as GenEval calls them, on CPU
    (where its torch.cuda.amp.autocast() changes nothing), transcribed as a reference."""
    with torch.no_grad():
        zeroshot_weights = []
        for colour in cc.COLOURS:
            texts = [t.format(c=colour, obj=classname) for t in cc.COLOUR_TEMPLATES]
            class_embeddings = clf.model.encode_text(clf.tokenizer(texts))
            class_embedding = torch.nn.functional.normalize(class_embeddings, dim=-1).mean(dim=0)
            class_embedding /= class_embedding.norm()
            zeroshot_weights.append(class_embedding)
        classifier = torch.stack(zeroshot_weights, dim=1)
        images = torch.stack([clf.preprocess(crop_for_colour(image, d)) for d in detections])
        image_features = torch.nn.functional.normalize(clf.model.encode_image(images), dim=-1)
        logits = 100.0 * image_features @ classifier
    return [cc.COLOURS[i] for i in logits.float().argmax(1).tolist()], logits.float()


def test_cpu_precision_is_fp32_and_matches_clip_benchmark(tiny_clip):
    assert tiny_clip.precision == "fp32" == cc.official_precision("cpu")
    assert cc.autocast_settings(tiny_clip) is None
    image, detections = _scene()
    expected_colours, expected_logits = _clip_benchmark_colours(tiny_clip, image, "kite", detections)
    assert cc.classify_colours(tiny_clip, image, "kite", detections) == expected_colours
    pixels = torch.stack([tiny_clip.preprocess(crop_for_colour(image, d)) for d in detections])
    logits = cc.colour_logits(tiny_clip, pixels, cc.text_classifier(tiny_clip, "kite"))
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected_logits)


def test_cuda_precision_is_clip_benchmarks_fp16_autocast(tiny_clip):
    import warnings

    assert cc.official_precision("cuda") == cc.official_precision(torch.device("cuda:1")) == "fp16-autocast"
    on_cuda = cc.ColourClassifier(
        model=tiny_clip.model,
        preprocess=tiny_clip.preprocess,
        tokenizer=tiny_clip.tokenizer,
        device=torch.device("cuda"),
        precision="fp16-autocast",
    )
    settings = cc.autocast_settings(on_cuda)
    assert settings == {"device_type": "cuda", "dtype": torch.float16, "enabled": True, "cache_enabled": True}
    with warnings.catch_warnings():  # both warn (deprecated / no CUDA here) and then disable themselves
        warnings.simplefilter("ignore")
        ours, theirs = torch.autocast(**settings), torch.cuda.amp.autocast()
    assert vars(ours) == vars(theirs)  # what clip-benchmark 1.4.0 enters with amp=True


def test_precision_choice_is_checked(tiny_clip):
    with pytest.raises(ValueError, match="CUDA autocast"):
        cc.colour_classifier_from_model(
            tiny_clip.model, tiny_clip.preprocess, tiny_clip.tokenizer, "cpu", "fp16-autocast"
        )
    with pytest.raises(ValueError, match="must be one of"):
        cc.colour_classifier_from_model(
            tiny_clip.model, tiny_clip.preprocess, tiny_clip.tokenizer, "cpu", "bf16"
        )


def test_geneval_record_names_the_colour_precision(tiny_clip, tmp_path, monkeypatch):
    from reca_eval.benchmarks.geneval import benchmark
    from reca_eval.scorers import mask2former

    monkeypatch.setattr(mask2former, "load_detector", lambda *args, **kwargs: object())
    config = tmp_path / "reca-test-amp-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    clip_weights = tmp_path / "tiny_clip.bin"
    torch.save(tiny_clip.model.state_dict(), clip_weights)
    detector_weights = tmp_path / "detector.pth"
    detector_weights.write_bytes(b"not loaded here")
    options = {
        "device": "cpu",  # the default (auto) would pick CUDA, and its precision, on a GPU machine
        "detector_arch": "tiny",
        "detector_weights": str(detector_weights),
        "clip_model": str(config),
        "clip_weights": str(clip_weights),
    }
    *_, scorer = benchmark._geneval_backend(options)
    assert scorer["colour_classifier"]["precision"] == "fp32"
    assert scorer["official_precision"] is True
    assert "NOT the official precision" not in scorer["backend"]
    with pytest.raises(ValueError, match="CUDA autocast"):
        benchmark._geneval_backend({**options, "clip_precision": "fp16-autocast"})
