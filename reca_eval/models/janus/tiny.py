"""Tiny, randomly initialised Janus models built in code: for tests and the ShapeWorld default.

Nothing is downloaded. The tokenizer is word-level (``tokenizers`` library) over a small vocabulary of
ShapeWorld and instruction words plus Janus's own special tokens, wrapped as a standard Hugging Face
fast tokenizer, so the model, tokenizer and processor save and load like a real Janus checkpoint.

Shape constraint: Janus decodes an image from a square grid of ``image_size // patch_size`` VQ
tokens per side, so the VQ encoder's down-sampling factor (2 ** (levels - 1)) must equal the SigLIP
patch size, else the generation grid and the understanding patch grid disagree.
"""

from __future__ import annotations

import math

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

# The special tokens of the real Janus / Janus-Pro tokenizer, so prompts render identically.
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image_placeholder>"
BOI_TOKEN = "<begin_of_image>"
EOI_TOKEN = "<end_of_image>"
ROLE_TOKENS = ("<|User|>", "<|Assistant|>")
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, IMAGE_TOKEN, BOI_TOKEN, EOI_TOKEN, *ROLE_TOKENS)

# Words of ShapeWorld captions and of generic reconstruction instructions; anything else maps to <unk>.
DEFAULT_WORDS = tuple(
    """
    a an the of and or with without is are there in on to at this that it its image picture scene photo
    one two three four five six seven eight zero no some many several
    red green blue yellow magenta cyan white black gray grey purple orange pink brown
    circle circles square squares triangle triangles ellipse ellipses rectangle rectangles star stars
    cross crosses pentagon pentagons semicircle semicircles shape shapes object objects
    left right above below top bottom middle center centre next near far beside behind front
    small large big tiny
    describe detail detailed draw generate render reconstruct recreate show depict create make copy
    please what how image's
    : . , ? ! ' -
    """.split()
)

# Janus's chat template (the transformers conversion script's), so `apply_chat_template` renders the
# same prompt layout for the tiny model as for Janus-Pro.
JANUS_CHAT_TEMPLATE = (
    "{%set seps=['\n\n','<\uff5cend\u2581of\u2581sentence\uff5c>']%}"
    "{%set i=0%}"
    "{%for message in messages%}"
    "{%if message['role']|lower=='user'%}"
    "<|User|>: "
    "{%elif message['role']|lower=='assistant'%}"
    "<|Assistant|>:{%if not (loop.last and not add_generation_prompt and message['content'][0]['type']=='text' "
    "and message['content'][0]['text']=='')%} {%endif%}"
    "{%else%}"
    "{{message['role'].capitalize()}}: "
    "{%endif%}"
    "{%for content in message['content']%}"
    "{%if content['type']=='image'%}"
    "{%if not loop.first%}{{'\n'}}{%endif%}"
    "<image_placeholder>"
    "{%if not loop.last%}{{'\n'}}{%endif%}"
    "{%elif content['type']=='text'%}"
    "{%set text=content['text']%}"
    "{%if loop.first%}{%set text=text.lstrip()%}{%endif%}"
    "{%if loop.last%}{%set text=text.rstrip()%}{%endif%}"
    "{%if not loop.first and message['content'][loop.index0-1]['type']=='text'%}"
    "{{' '+text}}"
    "{%else%}"
    "{{text}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if not loop.last or add_generation_prompt%}"
    "{%if message['role']|lower=='user'%}"
    "{{seps[0]}}"
    "{%else%}"
    "{{seps[1]}}"
    "{%endif%}"
    "{%endif%}"
    "{%endfor%}"
    "{%if add_generation_prompt%}<|Assistant|>:{%endif%}"
)


def build_tiny_tokenizer(words: tuple[str, ...] = DEFAULT_WORDS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Janus's special tokens; BOS is prepended like Janus's Llama tokenizer."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *words):
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Lower-casing keeps "Describe" and "describe" one word; special tokens are matched before it.
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=512,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN},
    )


def tiny_janus_config(
    vocab_size: int,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    codebook_size: int = 64,
    token_ids: dict[str, int] | None = None,
    *,
    kv_heads: int = 2,
    max_positions: int = 512,
    vision_hidden_size: int | None = None,
    vision_layers: int = 1,
    vq_embed_dim: int = 8,
) -> JanusConfig:
    """A Janus config small enough that forward + backward takes milliseconds on a CPU.

    ``token_ids`` holds ``pad``, ``bos``, ``eos`` and ``image`` ids of the tokenizer the model is paired
    with. The keyword-only sizes are the ShapeWorld base's knobs (``models.janus.shapeworld``); the
    vision tower's width defaults to the LLM's.
    """
    levels = math.log2(patch_size)
    if patch_size < 1 or not levels.is_integer():
        raise ValueError(
            f"patch_size must be a power of two (the VQ encoder halves per level), got {patch_size}"
        )
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    ids = token_ids or {"pad": 2, "bos": 0, "eos": 1, "image": 4}
    grid = image_size // patch_size
    text_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
    )
    vision_config = JanusVisionConfig(
        hidden_size=vision_hidden_size or hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        mlp_ratio=2.0,
        projection_dim=hidden_size,  # the aligner maps into the LLM's input space
        depth=2,
        num_image_tokens=grid * grid,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=vq_embed_dim,
        num_embeddings=codebook_size,
        latent_channels=32,
        base_channels=32,  # GroupNorm(32 groups) needs a multiple of 32
        channel_multiplier=[1] * (int(levels) + 1),  # down-sampling 2**levels == patch_size
        num_res_blocks=1,
        projection_dim=hidden_size,
        image_token_embed_dim=hidden_size,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=ids["image"],
        tie_word_embeddings=False,
    )


def build_tiny_processor(
    image_size: int = 32, num_image_tokens: int = 16, words: tuple[str, ...] = DEFAULT_WORDS
) -> JanusProcessor:
    """Tokenizer + PIL image processor (Janus-Pro's 0.5/0.5 normalisation) + Janus chat template."""
    tokenizer = build_tiny_tokenizer(words)
    image_processor = JanusImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        min_size=4,
    )
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=JANUS_CHAT_TEMPLATE,
        num_image_tokens=num_image_tokens,
    )


def build_tiny_janus(
    seed: int = 0, image_size: int = 32, patch_size: int = 8, codebook_size: int = 64, num_layers: int = 2
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """A randomly initialised tiny Janus and its processor; the same seed gives the same weights."""
    grid = image_size // patch_size
    processor = build_tiny_processor(image_size=image_size, num_image_tokens=grid * grid)
    tok = processor.tokenizer
    config = tiny_janus_config(
        vocab_size=len(tok),
        image_size=image_size,
        patch_size=patch_size,
        codebook_size=codebook_size,
        num_layers=num_layers,
        token_ids={
            "pad": tok.pad_token_id,
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "image": tok.convert_tokens_to_ids(IMAGE_TOKEN),
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(config)
    configure_generation(model, tok)
    model.eval()
    return model, processor


def configure_generation(model: JanusForConditionalGeneration, tokenizer) -> None:
    """Set what Janus's built-in ``generate(generation_mode="image")`` needs, as the official conversion does."""
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.guidance_scale = 5
    kwargs = dict(getattr(gen, "generation_kwargs", None) or {})
    kwargs["boi_token_id"] = tokenizer.convert_tokens_to_ids(BOI_TOKEN)
    gen.generation_kwargs = kwargs
