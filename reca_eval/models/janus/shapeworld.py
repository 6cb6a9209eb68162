"""The ShapeWorld unified model: a small Janus-architecture model, its word-level tokenizer, and the
world's training stream.

- :func:`shapeworld_words` collects the vocabulary from the world's own text generators (captions in
  every mode, edit instructions, benchmark prompt templates, reconstruction instructions), so every
  word the project ever writes is a token; anything else maps to ``<unk>`` and is counted
  (:func:`count_unknown_words`).
- :func:`build_shapeworld_model` builds the randomly initialised model + processor that
  ``trainers/pretrain_shapeworld.py`` pre-trains into the shipped base
  (``reca_eval/assets/shapeworld-base``, see :func:`shipped_base_path`).
- :func:`world_source` is an endless (or ``limit``-long) stream of (image, caption) pairs for the
  trainer, drawn with the training frequencies of :mod:`reca_eval.shapeworld.splits`.

Sizes (1.22M parameters): 32x32 images (the exact parser stays exact on 32-px renders: checked on
300 random training scenes), a Llama trunk of 4 layers x 128 (0.69M), a SigLIP-like encoder of 2
layers x 64 with 64 tokens (4-px patches), and a VQ tokenizer of 256 unit-norm codes with 64 tokens
per image (Janus ties the VQ grid to the SigLIP patch grid, so 16 understanding tokens with 64 image
tokens is not expressible in ``JanusConfig``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from PIL import Image
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

from reca_eval.models.janus.adapter import JanusAdapter
from reca_eval.models.janus.tiny import (
    DEFAULT_WORDS,
    IMAGE_TOKEN,
    JANUS_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    build_tiny_tokenizer,
    configure_generation,
    tiny_janus_config,
)
from reca_eval.shapeworld.captions import FILLER_SENTENCES, MODES, caption
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, NUMBER_WORDS, SHAPES, SIZES, plural
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import NoLayout, Scene, random_scene
from reca_eval.shapeworld.splits import sample_combo

RESOLUTION = 32
PATCH_SIZE = 4  # 8x8 = 64 understanding tokens and 64 VQ tokens
HIDDEN_SIZE = 128
NUM_LAYERS = 4
CODEBOOK_SIZE = 1024  # the default; pre-training may pick another size by held-out round-trip exactness
MAX_OBJECTS = 4
LAYOUT_REDRAWS = 20  # world_scene: draws of sizes and positions before a scene id is declared impossible

# The tokenizer's pre-tokenizer (``Whitespace``): words and runs of punctuation.
_WORD = re.compile(r"\w+|[^\w\s]+")


def split_words(text: str) -> list[str]:
    """The words the tokenizer sees in ``text`` (lower-cased, punctuation split off)."""
    return _WORD.findall(text.lower())


def _world_texts(scenes: int, instructions: Iterable[str]) -> Iterator[str]:
    """Every kind of text the project writes about ShapeWorld, from its own generators."""
    from reca_eval.shapeworld.edits import EDIT_TYPES, EditNotPossible, make_edit

    yield from instructions
    yield from FILLER_SENTENCES
    for seed in range(scenes):
        scene = world_scene(seed)
        for mode in MODES:
            yield caption(scene, mode, seed, hide_uncaptioned=False)
        rng = random.Random(seed)
        for edit_type in EDIT_TYPES:
            try:
                yield make_edit(edit_type, scene, rng)[0]
            except (EditNotPossible, RuntimeError):
                continue  # this scene cannot take this edit; other scenes cover its words
    # GenEval-style prompt templates (reca_eval.benchmarks.shapes.build).
    for shape in SHAPES:
        yield f"a photo of a {shape} and an {plural(shape)}"
    yield " ".join([*COLOURS, *BACKGROUNDS, *SIZES, *NUMBER_WORDS.values(), "left of right of above below"])


@lru_cache(maxsize=4)
def shapeworld_words(scenes: int = 400) -> tuple[str, ...]:
    """The vocabulary: the tiny model's generic words, then every word of the world's texts (sorted)."""
    # trainers/ sits beside reca_eval in the repository but is not installed with it; the vocabulary
    # is only (re)built from source, and the shipped base carries it in its tokenizer files.
    try:
        from reca_eval.models.instructions import RECONSTRUCTION_INSTRUCTIONS as instructions
    except ImportError:  # pragma: no cover - installed without trainers/
        instructions = ()
    found = {w for text in _world_texts(scenes, instructions) for w in split_words(text)}
    extra = sorted(found - set(DEFAULT_WORDS) - set(SPECIAL_TOKENS))
    return (*DEFAULT_WORDS, *extra)


def build_shapeworld_tokenizer(words: tuple[str, ...] | None = None) -> PreTrainedTokenizerFast:
    """Word-level HF fast tokenizer over the ShapeWorld vocabulary with Janus's special tokens."""
    return build_tiny_tokenizer(words or shapeworld_words())


def count_unknown_words(texts: Iterable[str], tokenizer: PreTrainedTokenizerFast) -> Counter[str]:
    """How often each word outside the tokenizer's vocabulary occurs in ``texts`` (they become ``<unk>``)."""
    vocab = tokenizer.get_vocab()
    return Counter(w for text in texts for w in split_words(text) if w not in vocab)


def shapeworld_config(tokenizer: PreTrainedTokenizerFast, codebook_size: int = CODEBOOK_SIZE) -> JanusConfig:
    """The ShapeWorld base's architecture: the tiny Janus config at the base's sizes."""
    return tiny_janus_config(
        len(tokenizer),
        image_size=RESOLUTION,
        patch_size=PATCH_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_layers=NUM_LAYERS,
        codebook_size=codebook_size,
        token_ids={
            "pad": tokenizer.pad_token_id,
            "bos": tokenizer.bos_token_id,
            "eos": tokenizer.eos_token_id,
            "image": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        },
        kv_heads=4,
        max_positions=256,
        vision_hidden_size=64,
        vision_layers=2,
        vq_embed_dim=16,
    )


def build_shapeworld_processor(words: tuple[str, ...] | None = None) -> JanusProcessor:
    grid = RESOLUTION // PATCH_SIZE
    image_processor = JanusImageProcessorPil(
        size={"height": RESOLUTION, "width": RESOLUTION},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        min_size=4,
        # Renders are palette images: nearest keeps every pixel one palette colour at 32 px.
        resample=Image.Resampling.NEAREST,
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=build_shapeworld_tokenizer(words),
        chat_template=JANUS_CHAT_TEMPLATE,
        num_image_tokens=grid * grid,
    )


def build_shapeworld_model(
    seed: int = 0, codebook_size: int = CODEBOOK_SIZE
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """The randomly initialised ShapeWorld model and its processor (same seed, same weights)."""
    import torch

    processor = build_shapeworld_processor()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(shapeworld_config(processor.tokenizer, codebook_size))
    configure_generation(model, processor.tokenizer)
    return model.eval(), processor


def shipped_base_path() -> Path:
    """The pre-trained base shipped inside the package (``reca_eval/assets/shapeworld-base``)."""
    return JanusAdapter.shipped_base_path()


def world_scene(seed: int) -> Scene:
    """A training scene: 1-4 objects whose (shape, colour) follow the training frequencies."""
    rng = random.Random(f"shapeworld-scene:{seed}")
    combos = [sample_combo(rng) for _ in range(rng.randint(1, MAX_OBJECTS))]
    for _ in range(LAYOUT_REDRAWS):
        try:
            return random_scene(rng.randrange(2**31), combos=combos)
        except NoLayout:
            # Rare (four large objects; the first in the training stream is scene 355,785): redraw sizes
            # and positions from the same rng, so the id still names one scene and every id that had a
            # layout keeps its scene.
            continue
    raise NoLayout(f"world scene {seed}: no layout for {combos} in {LAYOUT_REDRAWS} draws")


def world_source(
    seed: int,
    caption_mode: str = "dense",
    limit: int | None = None,
    resolution: int = RESOLUTION,
    start: int = 0,
) -> Iterator[tuple[Image.Image, str]]:
    """(image, caption) pairs of scenes ``seed``-derived and numbered from ``start``; endless unless ``limit``.

    Scene ``i`` of stream ``seed`` is ``world_scene(seed * 10**7 + i)``: streams of different seeds never
    share scenes, and the same (seed, i) always gives the same pair. Training captions hide the colour of
    ``uncaptioned`` combinations (see :mod:`reca_eval.shapeworld.captions`).
    """
    if caption_mode not in MODES:
        raise ValueError(f"unknown caption mode {caption_mode!r} (known: {', '.join(MODES)})")
    i = start
    while limit is None or i < start + limit:
        scene_id = seed * 10**7 + i
        scene = world_scene(scene_id)
        yield render_scene(scene, resolution), caption(scene, caption_mode, scene_id)
        i += 1
