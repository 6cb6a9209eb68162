"""Janus / Janus-Pro (``transformers.JanusForConditionalGeneration``) behind the UnifiedModel protocol.

Janus is decoupled: a SigLIP encoder + aligner reads images (understanding), a VQ tokenizer writes them
(generation), and one Llama trunk runs both. How conditions become a sequence, as Janus's own format:

    BOS "<|User|>: " <segments> "\\n\\n<|Assistant|>:" BOI  img_1 ... img_T
                                                         ^ the generation head predicts img_t here

Text segments are rendered with the processor's chat template and tokenised together; an
:class:`ImageEmbeds` segment becomes ``<begin_of_image> embeds <end_of_image>`` in place of the
template's ``<image_placeholder>`` (how the processor expands images). The unconditional (CFG) branch
keeps the layout and replaces every position but BOS and the final BOI with the pad token, as Janus's
``generate`` does; a ``Condition([])`` (no segments) is that unconditional input, for condition dropout.
Batches are left-padded with position ids counted from the first real token, so a batched result equals
the per-example one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DynamicCache, JanusForConditionalGeneration

from reca_eval.core.records import atomic_write_dir
from reca_eval.models.protocol import (
    Condition,
    FamilyFacts,
    ImageEmbeds,
    SamplingConfig,
    dispatch_objective,
)
from reca_eval.models.sampling import (
    TokenSampler,
    cache_keyword,
    check_sampling,
    guided_logits,
    uses_guidance,
)

ConditionSource = Literal["understanding", "vq_embeddings"]
CONDITION_SOURCES: tuple[str, ...] = ("understanding", "vq_embeddings")
IGNORE_INDEX = -100
PROMPT_CACHE_SIZE = 65536  # rendered prompts kept per adapter (cleared when full)


@dataclass
class _Row:
    """One sequence before embedding: token ids (an image's slots hold the image token), the image
    embeddings that fill those slots in order, and which positions are the condition's own segments."""

    ids: list[int]
    images: list[torch.Tensor]
    content: list[bool]


class JanusAdapter(torch.nn.Module, FamilyFacts):
    """A Janus checkpoint and its processor as a :class:`reca_eval.models.protocol.UnifiedModel`.

    ``condition_on`` picks what :meth:`condition_features` returns as the RecA condition:
    ``"understanding"`` (SigLIP + aligner, the default and the paper's rule) or ``"vq_embeddings"``
    (the generation tokenizer's own code embeddings: the copy/collapse ablation).
    :meth:`understanding_embeddings` always returns understanding features, whatever ``condition_on``.
    """

    family = "janus"
    model_types = ("janus",)
    # The understanding side and the VQ tokenizer stay frozen: Janus is decoupled (RecA rule), and the
    # frozen encoders are what the condition and the targets are computed with.
    frozen_modules = ("vision", "aligner", "vqmodel")
    # One trunk runs understanding and generation, so RecA's mix keeps image->text (the authors' 1:1).
    reca_objectives = ("recon", "i2t")
    vq_ablation = True  # condition_on="vq_embeddings"
    # Janus-Pro's published sampling (deepseek-ai/Janus generation_inference.py): CFG weight 5 and
    # temperature 1 over the whole vocabulary (no top-k or top-p).
    default_guidance_scale = 5.0
    extra_sampling_defaults = {"temperature": 1.0, "top_k": None, "top_p": None}
    shapeworld_asset = "shapeworld-base"
    shapeworld_build = "python -m trainers.pretrain_shapeworld trainers/recipes/shapeworld_base.yaml"
    main_arms = ("base", "SFT", "SFT+RecA", "SFT-matched", "SFT-half")
    main_benchmarks = ("shapes-geneval", "shapes-dpg", "shapes-edit")

    def __init__(
        self, model: JanusForConditionalGeneration, processor, condition_on: ConditionSource = "understanding"
    ):
        super().__init__()
        if condition_on not in CONDITION_SOURCES:
            raise ValueError(f"condition_on must be one of {CONDITION_SOURCES}, got {condition_on!r}")
        self.model = model
        self.processor = processor
        self.condition_on = condition_on
        vision = model.config.vision_config
        self.image_size: int = int(vision.image_size)
        self.num_image_tokens: int = (vision.image_size // vision.patch_size) ** 2
        self.codebook_size: int = int(model.config.vq_config.num_embeddings)
        self._cache_keyword = cache_keyword(model.model.language_model)
        self._prompt_cache: dict[tuple, list[int]] = {}
        tok = processor.tokenizer
        # Role tokens bounding the user's own segments in a prompt (see _prompt_row).
        self._roles = tuple(tok.convert_tokens_to_ids(t) for t in ("<|User|>", "<|Assistant|>"))
        self._ids = {
            "bos": tok.bos_token_id,
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "image": tok.convert_tokens_to_ids(tok.image_token),
            "boi": tok.convert_tokens_to_ids(tok.boi_token),
            "eoi": tok.convert_tokens_to_ids(tok.eoi_token),
        }
        missing = [k for k, v in self._ids.items() if v is None or v == tok.unk_token_id]
        if missing:
            raise ValueError(f"the Janus tokenizer lacks special token(s) {missing}")
        if self._ids["image"] != model.config.image_token_id:
            raise ValueError(
                f"tokenizer image token id {self._ids['image']} != config.image_token_id {model.config.image_token_id}"
            )

    # ----------------------------------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.model.language_model.embed_tokens.weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        inner = self.model.model
        return {
            "language_model": inner.language_model,
            "lm_head": self.model.lm_head,
            "generation_head": inner.generation_head,
            "generation_embeddings": inner.generation_embeddings,
            "generation_aligner": inner.generation_aligner,
            "aligner": inner.aligner,
            "vision": inner.vision_model,
            "vqmodel": inner.vqmodel,
        }

    def encoder_modules(self) -> dict[str, torch.nn.Module]:
        """What computes the frozen outputs (for the trainer's cache fingerprints)."""
        named = self.trainable_modules()
        return {
            "understanding": torch.nn.ModuleDict({n: named[n] for n in ("vision", "aligner")}),
            "generation_targets": torch.nn.ModuleDict({"vqmodel": named["vqmodel"]}),
        }

    def forward(self, objective: str, **kwargs) -> torch.Tensor:
        return dispatch_objective(self, objective, **kwargs)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        rgb = [im.convert("RGB") for im in images]
        pixel_values = self.processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self.device, self.dtype)

    # ------------------------------------------------------------------------------- image encoders
    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(
            self.device, self.model.model.vision_model.embeddings.patch_embedding.weight.dtype
        )
        return self.model.model.get_image_features(pixel_values).pooler_output

    @torch.no_grad()
    def understanding_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen SigLIP + aligner features in the LLM input space (B, N, H)."""
        return self._image_features(pixel_values).detach()

    def condition_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The RecA condition this adapter was configured with (``condition_on``): understanding features,
        or for the copy/collapse ablation the generation tokenizer's own code embeddings."""
        if self.condition_on == "vq_embeddings":
            return self.vq_condition_embeddings(pixel_values)
        return self.understanding_embeddings(pixel_values)

    @torch.no_grad()
    def generation_targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, self.model.model.vqmodel.quant_conv.weight.dtype)
        ids = self.model.model.vqmodel.encode(pixel_values).image_tokens
        return ids.reshape(pixel_values.shape[0], -1).long()

    @torch.no_grad()
    def vq_condition_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The generation path's own input embeddings of an image's VQ codes (B, T, H): lets the model copy."""
        return self.model.prepare_embeddings_for_image_generation(
            self.generation_targets(pixel_values)
        ).detach()

    # ---------------------------------------------------------------------------- sequence building
    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        return self.model.get_input_embeddings()(torch.tensor(ids, dtype=torch.long, device=self.device))

    def _prompt_ids(self, content: list[dict], generation: bool) -> list[int]:
        """Token ids of Janus's chat prompt for one user turn, ending at "<|Assistant|>:" (+ BOI).

        Memoised per adapter: training batches repeat the same instructions, sparse captions and the
        bare image prompt, and rendering the chat template costs more than the trunk on a GPU.
        """
        key = _prompt_key(content, generation)
        if key not in self._prompt_cache:
            self._cache_prompts([content], generation)
        return list(self._prompt_cache[key])

    def _cache_prompts(self, contents: list[list[dict]], generation: bool) -> None:
        """Render the chat prompts of ``contents`` not memoised yet and tokenise them in one call: the
        tokenizer's per-call overhead is most of what a short new prompt costs (a training batch brings
        hundreds of new captions)."""
        rendered: dict[tuple, str] = {}
        for content in contents:
            key = _prompt_key(content, generation)
            if key not in self._prompt_cache and key not in rendered:
                prompt = self.processor.apply_chat_template(
                    [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
                )
                rendered[key] = prompt + self.processor.tokenizer.boi_token if generation else prompt
        if not rendered:
            return
        if len(self._prompt_cache) + len(rendered) > PROMPT_CACHE_SIZE:
            self._prompt_cache.clear()
        encoded = self.processor.tokenizer(list(rendered.values()), add_special_tokens=True)["input_ids"]
        for key, ids in zip(rendered, encoded, strict=True):
            ids = list(ids)
            if self._ids["bos"] is not None and (not ids or ids[0] != self._ids["bos"]):
                ids.insert(0, self._ids["bos"])
            self._prompt_cache[key] = ids

    def _prompt_row(
        self, content: list[dict], images: list[torch.Tensor], generation: bool, where: str
    ) -> _Row:
        """One prompt as token ids with each image placeholder expanded to BOI, one slot per embedding
        row, EOI; ``content`` marks the user's own segments (not BOS, role tokens, BOI/EOI)."""
        ids = self._prompt_ids(content, generation)
        image_id = self._ids["image"]
        if ids.count(image_id) != len(images):
            raise ValueError(
                f"{where}: {len(images)} image segment(s) but {ids.count(image_id)} "
                f"{self.processor.tokenizer.image_token!r} in the rendered prompt (does a text segment "
                "contain the placeholder token?)"
            )
        for embeds in images:
            if embeds.ndim != 2 or embeds.shape[-1] != self.hidden_size:
                raise ValueError(
                    f"{where}: ImageEmbeds must be (num_tokens, {self.hidden_size}), got {tuple(embeds.shape)}"
                )
        user, assistant = self._roles
        # The user turn is "<|User|>" ":" <segments> "<|Assistant|>" ":" [BOI].
        first = ids.index(user) + 2 if user in ids else 1
        last = len(ids) - 1 - ids[::-1].index(assistant) if assistant in ids else len(ids) - 1
        row = _Row([], [], [])
        sizes = iter(images)
        for i, t in enumerate(ids):
            inside = first <= i < last
            if t == image_id:
                n = int(next(sizes).shape[0])
                row.ids += [self._ids["boi"]] + [image_id] * n + [self._ids["eoi"]]
                row.content += [False] + [inside] * n + [False]
            else:
                row.ids.append(t)
                row.content.append(inside)
        row.images = list(images)
        return row

    def _condition_row(self, condition: Condition, where: str = "condition") -> _Row:
        """The generation prompt of one condition (ending with BOI); ``Condition([])`` is unconditional."""
        return self._condition_rows([condition], [where])[0]

    def _condition_rows(self, conditions: list[Condition], wheres: list[str] | None = None) -> list[_Row]:
        """:meth:`_condition_row` of each condition, the batch's new prompts tokenised together."""
        wheres = wheres or [f"condition {i}" for i in range(len(conditions))]
        parsed = [_condition_content(c, w) for c, w in zip(conditions, wheres, strict=True)]
        self._cache_prompts([content for content, _ in parsed], generation=True)
        rows = []
        for condition, (content, images), where in zip(conditions, parsed, wheres, strict=True):
            row = self._prompt_row(content, images, generation=True, where=where)
            rows.append(row if condition.segments else self._unconditional_row(len(row.ids)))
        return rows

    def _unconditional_row(self, length: int) -> _Row:
        # Janus's CFG branch: BOS, pads, BOI (the image then follows the BOI as usual).
        ids = [self._ids["bos"]] + [self._ids["pad"]] * (length - 2) + [self._ids["boi"]]
        return _Row(ids, [], [False] * length)

    def _embed_rows(self, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded (B, L, H) input embeddings, attention mask and position ids of ``rows``: one
        embedding lookup for the batch, image embeddings written into their slots (gradients flow to
        both), padding zero."""
        length = max(len(r.ids) for r in rows)
        pad = self._ids["pad"]
        ids = torch.tensor(
            [[pad] * (length - len(r.ids)) + r.ids for r in rows], dtype=torch.long, device=self.device
        )
        mask = torch.tensor(
            [[0] * (length - len(r.ids)) + [1] * len(r.ids) for r in rows],
            dtype=torch.long,
            device=self.device,
        )
        embeds = self.model.get_input_embeddings()(ids) * mask.unsqueeze(-1).to(self.dtype)
        images = [im for r in rows for im in r.images]
        if images:
            slots = (ids == self._ids["image"]) & mask.bool()
            values = torch.cat(images).to(self.device, self.dtype)
            if int(slots.sum()) != values.shape[0]:  # e.g. an answer text that spells the image token
                raise ValueError(
                    f"{int(slots.sum())} image-token positions for {values.shape[0]} image embedding rows: "
                    f"does a text contain {self.processor.tokenizer.image_token!r}?"
                )
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), values)
        return embeds, mask, _positions(mask)

    def _content_tensor(self, rows: list[_Row], length: int) -> torch.Tensor:
        return torch.tensor(
            [[False] * (length - len(r.content)) + r.content for r in rows],
            dtype=torch.bool,
            device=self.device,
        )

    def embed_condition(
        self, condition: Condition, unconditional: bool = False, where: str = "condition"
    ) -> torch.Tensor:
        """Input embeddings (L, H) of one condition, ending with BOI; ``unconditional`` keeps the length."""
        row = self._condition_row(condition, where)
        if unconditional:
            row = self._unconditional_row(len(row.ids))
        return self._embed_rows([row])[0][0]

    def _trunk(self, embeds, mask, positions, cache=None) -> torch.Tensor:
        kwargs = {self._cache_keyword: cache} if cache is not None else {}
        out = self.model.model.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **kwargs,
        )
        return out.last_hidden_state

    # ------------------------------------------------------------------------ condition states
    def condition_hidden_states(self, conditions: list[Condition], layer: int = -1) -> torch.Tensor:
        """The trunk's hidden state at ``layer`` averaged over each condition's own positions: (B, H).

        Pooling is a mean over the segments' positions (caption words; instruction words and image
        embeddings), leaving out the template tokens every prompt shares, so a text prompt and an image
        prompt of the same scene are summarised the same way. A mean rather than the last position: a
        causal trunk that was never trained to summarise at one position still carries a condition's
        content spread over its tokens, and generation reads all of them through attention.
        ``layer=-1`` is the final (normed) output; ``0`` the input embeddings; ``k`` the k-th layer's output.
        """
        if not conditions:
            return torch.zeros(0, self.hidden_size, device=self.device)
        if any(not c.segments for c in conditions):
            raise ValueError("condition_hidden_states: an empty Condition([]) has no positions to pool")
        rows = self._condition_rows(conditions)
        embeds, mask, positions = self._embed_rows(rows)
        content = self._content_tensor(rows, mask.shape[1])
        num_layers = int(self.model.config.text_config.num_hidden_layers)
        if not -1 <= layer <= num_layers:
            raise ValueError(f"layer must be in [-1, {num_layers}], got {layer}")
        out = self.model.model.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            output_hidden_states=layer not in (-1, num_layers),
        )
        hidden = out.last_hidden_state if layer in (-1, num_layers) else out.hidden_states[layer]
        weights = content.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    # ------------------------------------------------------------------------------------- losses
    def image_token_logits(
        self, conditions: list[Condition], targets: torch.Tensor, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """Teacher-forced image-token logits (B, T, codebook) of ``targets`` given ``conditions``.

        With ``guidance_scale != 1`` the unconditional branch runs too and the logits are CFG-combined,
        exactly as :meth:`generate` combines them step by step.
        """
        targets = self._check_targets(conditions, targets)
        guided = guidance_scale != 1.0
        rows = self._condition_rows(conditions)
        if guided:
            rows += [self._unconditional_row(len(r.ids)) for r in rows]
        prefix, mask, _ = self._embed_rows(rows)
        image_in = self.model.prepare_embeddings_for_image_generation(targets[:, :-1]).to(prefix.dtype)
        if guided:
            image_in = torch.cat([image_in, image_in])
        embeds = torch.cat([prefix, image_in], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], image_in.shape[1])], dim=1)
        hidden = self._trunk(embeds, mask, _positions(mask))
        logits = self.model.model.generation_head(hidden[:, prefix.shape[1] - 1 :]).float()
        if guided:
            cond, uncond = logits.chunk(2)
            return guided_logits(cond, uncond, guidance_scale)
        return logits

    def generation_loss(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        logits = self.image_token_logits(conditions, targets)
        targets = targets.to(logits.device)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def _check_targets(self, conditions: list[Condition], targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim != 2 or targets.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise ValueError(
                f"targets must be VQ ids (B, T) of an integer dtype, got {tuple(targets.shape)} {targets.dtype}"
            )
        if targets.shape[0] != len(conditions):
            raise ValueError(f"{len(conditions)} condition(s) but {targets.shape[0]} target row(s)")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.codebook_size):
            raise ValueError(
                f"target ids span [{int(targets.min())}, {int(targets.max())}], outside the codebook [0, {self.codebook_size})"
            )
        return targets.to(self.device).long()

    def understanding_loss(self, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Image -> text CE over the answer tokens (and EOS) of "<|User|>: <image>\\n\\n<|Assistant|>: text"."""
        if pixel_values.shape[0] != len(texts):
            raise ValueError(f"{pixel_values.shape[0]} image(s) but {len(texts)} text(s)")
        features = self._image_features(pixel_values)  # with gradients: a recipe may train the aligner
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if empty:
            raise ValueError(f"understanding text {empty[0]} is empty")
        answers = self.processor.tokenizer([" " + t.strip() for t in texts], add_special_tokens=False)[
            "input_ids"
        ]
        rows, labels = [], []
        for i, (feats, answer) in enumerate(zip(features, answers, strict=True)):
            row = self._prompt_row(
                [{"type": "image"}], [feats], generation=False, where=f"understanding example {i}"
            )
            answer = list(answer) + [self._ids["eos"]]
            # Position t predicts token t+1: the prompt's last position predicts the first answer token.
            labels.append([IGNORE_INDEX] * (len(row.ids) - 1) + answer + [IGNORE_INDEX])
            row.ids += answer
            row.content += [False] * len(answer)
            rows.append(row)
        embeds, mask, positions = self._embed_rows(rows)
        length = embeds.shape[1]
        label_tensor = torch.tensor(
            [[IGNORE_INDEX] * (length - len(lab)) + lab for lab in labels],
            dtype=torch.long,
            device=self.device,
        )
        logits = self.model.lm_head(self._trunk(embeds, mask, positions)).float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), label_tensor.reshape(-1), ignore_index=IGNORE_INDEX
        )

    # ----------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_image_tokens(self, conditions: list[Condition], sampling: SamplingConfig) -> torch.Tensor:
        """VQ ids (B, T) sampled with a KV cache; image i uses a generator seeded ``sampling.seed + i``
        (or ``sampling.seeds[i]``).

        The conditional and unconditional (CFG) rows run as one batch. The prompt is read by the
        language model's own forward; each image token then goes through its decoder layers with keys and
        values written in place into buffers allocated once (:class:`_StaticKV`), so a step does the
        layers' arithmetic and nothing that grows with the sequence or the batch in Python.
        """
        check_sampling(sampling)
        if not conditions:
            return torch.zeros(0, self.num_image_tokens, dtype=torch.long, device=self.device)
        guided = uses_guidance(sampling)
        rows = self._condition_rows(conditions)
        if guided:
            rows += [self._unconditional_row(len(r.ids)) for r in rows]
        embeds, mask, positions = self._embed_rows(rows)
        batch, steps = len(conditions), self.num_image_tokens
        pick = TokenSampler(sampling, sampling.seeds or sampling.seed, batch, steps, self.device)
        lm = self.model.model.language_model
        prefill = DynamicCache(config=self.model.config.text_config)
        hidden = self._trunk(embeds, mask, positions, cache=prefill)[:, -1:]
        cache = _StaticKV(prefill, extra=steps - 1)
        # What the language model's forward builds at each step: a boolean mask over the prompt's
        # padding and every image token so far, or none when no row is padded.
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], steps - 1)], dim=1).bool()
        attend = None if bool(mask.all()) else full_mask[:, None, None, :]
        if attend is not None and lm.config._attn_implementation != "sdpa":
            # Eager (and other) attention adds the mask to the scores: a boolean would add 0 or 1.
            attend = torch.zeros(attend.shape, dtype=embeds.dtype, device=self.device).masked_fill(
                ~attend, torch.finfo(embeds.dtype).min
            )
        step_positions = positions[:, -1:] + torch.arange(1, steps, device=self.device)
        cos, sin = lm.rotary_emb(embeds, position_ids=step_positions)
        layers = lm.layers[: lm.config.num_hidden_layers]
        tokens = torch.empty(batch, steps, dtype=torch.long, device=self.device)
        for step in range(steps):
            logits = self.model.model.generation_head(hidden[:, 0]).float()
            if guided:
                cond, uncond = logits.chunk(2)
                logits = guided_logits(cond, uncond, sampling.guidance_scale)
            tokens[:, step] = pick(logits, step)
            if step == steps - 1:
                break
            step_ids = tokens[:, step : step + 1]
            if guided:
                step_ids = torch.cat([step_ids, step_ids])
            hidden = self.model.prepare_embeddings_for_image_generation(step_ids).to(embeds.dtype)
            seen = cache.length + 1
            step_mask = None if attend is None else attend[..., :seen]
            rope = (cos[:, step : step + 1], sin[:, step : step + 1])
            for layer in layers:
                hidden = layer(
                    hidden,
                    attention_mask=step_mask,
                    position_embeddings=rope,
                    **{self._cache_keyword: cache},
                )
            cache.length = seen
            hidden = lm.norm(hidden)
        return tokens

    @torch.no_grad()
    def decode_images(self, tokens: torch.Tensor) -> list[Image.Image]:
        """VQ ids (B, T) -> PIL images, undoing the processor's normalisation."""
        pixels = self.model.decode_image_tokens(tokens.to(self.device)).float().cpu().numpy()  # (B, H, W, C)
        proc = self.processor.image_processor
        mean = np.asarray(proc.image_mean, dtype=np.float32)
        std = np.asarray(proc.image_std, dtype=np.float32)
        rgb = np.clip((pixels * std + mean) * 255.0, 0, 255).round().astype(np.uint8)
        return [Image.fromarray(im) for im in rgb]

    def generate(self, conditions: list[Condition], sampling: SamplingConfig) -> list[Image.Image]:
        return self.decode_images(self.sample_image_tokens(conditions, sampling))

    # --------------------------------------------------------------------------------------- saving
    def save_pretrained(self, path: Path) -> None:
        """A plain Hugging Face directory (config, safetensors, tokenizer, processor), swapped in whole."""

        def write(folder: Path) -> None:
            self.model.save_pretrained(folder)
            self.processor.save_pretrained(folder)

        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        condition_on: ConditionSource = "understanding",
    ) -> JanusAdapter:
        from transformers import JanusProcessor

        model = JanusForConditionalGeneration.from_pretrained(str(path), dtype=dtype or torch.float32)
        processor = JanusProcessor.from_pretrained(str(path))
        return cls(model.to(device).eval(), processor, condition_on=condition_on)


class _StaticKV:
    """Keys and values of every decoder layer in buffers allocated once for the whole image.

    Filled from the prompt's cache, then a step's ``update`` writes its key and value in place at column
    ``length`` and returns the filled prefix (views, no copy); the sampler advances ``length`` after
    every layer has run: no layer's keys and values are re-allocated or copied as the image grows.
    """

    def __init__(self, prompt: DynamicCache, extra: int):
        self.length = prompt.get_seq_length()
        if not self.length:
            # What a cache keyword the language model does not know leads to (transformers 5.23
            # swallows it): every image token would see only itself.
            raise TypeError("the language model left the KV cache empty: was the cache keyword ignored?")
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in prompt.layers:
            for source, buffers in ((layer.keys, self.keys), (layer.values, self.values)):
                rows, heads, _, dim = source.shape
                buffer = source.new_empty(rows, heads, self.length + extra, dim)
                buffer[:, :, : self.length] = source
                buffers.append(buffer)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        n = self.length + key_states.shape[-2]
        self.keys[layer_idx][:, :, self.length : n] = key_states
        self.values[layer_idx][:, :, self.length : n] = value_states
        return self.keys[layer_idx][:, :, :n], self.values[layer_idx][:, :, :n]


def _prompt_key(content: list[dict], generation: bool) -> tuple:
    return (generation, tuple((c["type"], c.get("text")) for c in content))


def _condition_content(condition: Condition, where: str) -> tuple[list[dict], list[torch.Tensor]]:
    """A condition as chat-template content (text and image segments) and its image embeddings."""
    content: list[dict] = []
    images: list[torch.Tensor] = []
    for j, seg in enumerate(condition.segments):
        if isinstance(seg, ImageEmbeds):
            content.append({"type": "image"})
            images.append(seg.embeds)
        elif isinstance(seg, str):
            content.append({"type": "text", "text": seg})
        else:
            raise TypeError(f"{where} segment {j}: expected str or ImageEmbeds, got {type(seg).__name__}")
    return content, images


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # Left padding: count positions from each row's first real token, so padding never shifts RoPE.
    return (mask.cumsum(-1) - 1).clamp(min=0)
