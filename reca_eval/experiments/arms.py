"""The arms of the SFT vs RecA comparison: what each trains, for how many steps, from which checkpoint.

An arm is a sequence of training stages, each a plain recipe dict (checked by
``reca_eval.training.recipe.recipe_from_dict``) built here from one base recipe plus overrides, so every arm
differs from the others only where its definition says. Every arm starts from the same base
checkpoint; a later stage starts from the stage before it.

Compute is matched by construction (S = ``Budget.sft_steps``, R = ``Budget.reca_steps``, one batch
size for every stage):

====================  =========================================  ==========================================
arm                   stages                                     controls
====================  =========================================  ==========================================
base                  none                                       the starting point
SFT                   t2i S                                      --
SFT+RecA              t2i S, then recon+i2t (1:1) R              the paper's SFT -> RecA
SFT-matched           t2i S, then t2i R on fresh captions        SFT+RecA: same steps, no RecA
SFT-half              t2i H (H = the T2I steps of RecA+T2I)      RecA+T2I: same T2I updates, no recon/i2t
RecA                  recon+i2t (1:1) S+R                        the authors' mix for shared parameters
RecA+T2I              t2i+recon+i2t (2:1:1) S+R                  RecA with captions in the mix
RecA-VQ (ablation)    as RecA, conditioned on the VQ codes       the copy/collapse ablation
====================  =========================================  ==========================================

Model families (``family=``, :data:`reca_eval.models.FAMILIES`): ``"janus"`` (the table above, the
Janus-architecture ShapeWorld model) and ``"flow"`` (VLM + queries + DiT,
:mod:`reca_eval.models.flow.shapeworld`). What differs per family is read from its adapter class
(:class:`reca_eval.models.protocol.FamilyFacts`): the frozen modules, RecA's objectives and whether the
VQ ablation applies. The flow family is decoupled with a frozen VLM and has no image->text objective
(``FlowAdapter.understanding_loss`` refuses it), so its RecA is reconstruction alone: each mix keeps
its RecA share, with i2t's share folded into recon (RecA: recon S+R; SFT+RecA: SFT, then recon R;
RecA+T2I: t2i : recon = 2 : 1+1, and SFT-half takes that mix's exact T2I steps). RecA-VQ needs a VQ
tokenizer and is Janus-only (:func:`family_arms`). Flow arms are labelled ``flow/<arm>``
(:func:`qualified_name`); the default family's (Janus's) arms keep their plain names, so existing
records and commands read as before.

A micro-step's source is drawn by ratio (``reca_eval.training.data.source_for_step``, a pure function of the
seed), so H is the *exact* number of T2I micro-steps RecA+T2I takes at that seed, not its expectation.
Identical stages (SFT's, and the first stage of SFT+RecA and of SFT-matched) are trained once by the
runner (:mod:`reca_eval.experiments.runner`), keyed by :func:`stage_key`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from reca_eval.models import DEFAULT_FAMILY, check_family, family_class
from reca_eval.models.instructions import RECONSTRUCTION_INSTRUCTIONS
from reca_eval.shapeworld.captions import MODES
from reca_eval.training.data import source_for_step
from reca_eval.training.recipe import recipe_from_dict

VQ_ABLATION_LABEL = "condition_on=vq_embeddings (copy/collapse ablation)"

BASE, SFT, SFT_RECA, SFT_MATCHED, SFT_HALF = "base", "SFT", "SFT+RecA", "SFT-matched", "SFT-half"
RECA, RECA_T2I, RECA_VQ = "RecA", "RecA+T2I", "RecA-VQ (ablation)"
ALL_ARMS = (BASE, SFT, SFT_RECA, SFT_MATCHED, SFT_HALF, RECA, RECA_T2I, RECA_VQ)
MAIN_ARMS = (BASE, SFT, SFT_RECA, SFT_MATCHED, SFT_HALF)  # the README's main command (Janus)

# Scene streams of reca_eval.models.janus.shapeworld.world_source used by the arms. The base's pre-training
# uses streams 1-3 (trainers/pretrain_shapeworld.py); these start far above, and differ per seed.
STREAM_OFFSET = 1000
STREAM_ROLES = ("t2i", "t2i-more", "recon", "i2t")
RECA_WORDS = {"recon": "reconstruction", "i2t": "image->text"}


@dataclass(frozen=True)
class Budget:
    """Steps, batch and optimiser settings shared by every arm (what "matched compute" holds fixed)."""

    sft_steps: int = 40
    # RecA is the short stage after SFT; R < S also keeps SFT-half (about (S+R)/2 T2I steps) apart from SFT.
    reca_steps: int = 20
    batch_size: int = 16
    lr: float = 2e-4
    warmup_steps: int = 5
    # RecA+T2I's mix, t2i : recon : i2t; SFT-half takes the same number of T2I steps.
    mix_ratios: tuple[float, float, float] = (2.0, 1.0, 1.0)
    caption_mode: str = "dense"  # captions of the t2i and i2t data (reca_eval.shapeworld.captions)
    condition_dropout: float = 0.1
    bottleneck_size: int = 0  # 0 = the model's own resolution (the lowest it reads)
    instructions: int = 0  # reconstruction instructions RecA samples from (0 = all; 1 = one fixed phrase)

    def __post_init__(self) -> None:
        for name in ("sft_steps", "reca_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Budget.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.mix_ratios) != 3 or min(self.mix_ratios) <= 0:
            raise ValueError(f"Budget.mix_ratios must be three positive numbers, got {self.mix_ratios}")
        if self.bottleneck_size < 0:
            raise ValueError(
                f"Budget.bottleneck_size (--bottleneck-size) must be >= 0 (0 = the model's own resolution), "
                f"got {self.bottleneck_size}"
            )
        if not 0 <= self.instructions <= len(RECONSTRUCTION_INSTRUCTIONS):
            raise ValueError(
                f"Budget.instructions (--instructions) must be in [0, {len(RECONSTRUCTION_INSTRUCTIONS)}] "
                f"(0 = all), got {self.instructions}"
            )
        if self.caption_mode not in MODES:
            raise ValueError(
                f"Budget.caption_mode (--caption-mode) must be one of {', '.join(MODES)}, got {self.caption_mode!r}"
            )

    @property
    def total_steps(self) -> int:
        return self.sft_steps + self.reca_steps


def family_arms(family: str) -> tuple[str, ...]:
    """The arms that exist for a family: all of them, less RecA-VQ where the VQ ablation does not apply."""
    return tuple(a for a in ALL_ARMS if a != RECA_VQ or family_class(family).vq_ablation)


def reca_objectives(family: str) -> tuple[str, ...]:
    """RecA's objectives for a family: reconstruction, plus image->text where understanding and
    generation share parameters (Janus's trunk); a frozen VLM (flow) is never trained on text."""
    return tuple(family_class(family).reca_objectives)


@dataclass(frozen=True)
class Stream:
    """Training pairs for one source: ``world_source(seed, caption_mode, limit)``."""

    seed: int
    caption_mode: str
    limit: int


@dataclass(frozen=True)
class Stage:
    name: str  # "sft", "reca", ...
    recipe: dict[str, Any]  # output_dir and the start checkpoint are filled in by the runner
    streams: dict[str, Stream]  # source name -> its stream


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    stages: tuple[Stage, ...]
    controls: str = ""  # the arm whose compute this one matches, and how
    family: str = DEFAULT_FAMILY

    @property
    def label(self) -> str:
        return qualified_name(self.name, self.family)

    @property
    def steps(self) -> int:
        return sum(stage.recipe["train"]["steps"] for stage in self.stages)


def qualified_name(arm: str, family: str) -> str:
    """The arm's name in records and tables: ``flow/SFT+RecA``; the default family's (Janus's) arms keep
    their plain names."""
    check_family(family)
    return arm if family == DEFAULT_FAMILY else f"{family}/{arm}"


def stream_seed(seed: int, role: str) -> int:
    """The world stream of a training seed and a data role: disjoint across seeds, roles and pre-training."""
    return STREAM_OFFSET + 10 * seed + STREAM_ROLES.index(role)


def _source(name: str, objective: str, ratio: float) -> dict[str, Any]:
    return {"kind": "world", "name": name, "objective": objective, "ratio": ratio}


def base_recipe(
    name: str, steps: int, budget: Budget, seed: int, family: str = DEFAULT_FAMILY
) -> dict[str, Any]:
    """The recipe every stage starts from; stages override the data and, for the ablation, the condition.
    Families differ only in what is frozen (the builder reads the family from the checkpoint)."""
    check_family(family)
    return {
        "name": name,
        "model": {
            "builder": "reca_eval.training.builders:from_checkpoint",
            "kwargs": {},
            "freeze": list(family_class(family).frozen_modules),
        },
        "data": {"sources": [], "num_workers": 0},
        "objective": {
            "bottleneck": "downscale",
            "bottleneck_size": budget.bottleneck_size,
            "condition_dropout": budget.condition_dropout,
            "condition_on": "understanding",
            # only when set: the default's stage keys (and so every cached stage) stay as they were
            **({"instructions": budget.instructions} if budget.instructions else {}),
        },
        "train": {
            "steps": steps,
            "batch_size": budget.batch_size,
            "grad_accum": 1,
            "lr": budget.lr,
            # Constant after warmup: SFT-matched's first S steps are SFT's, so the arms part only where
            # their definitions do.
            "scheduler": "constant",
            "warmup_steps": min(budget.warmup_steps, steps - 1),
            "seed": seed,
            "mixed_precision": "no",
            "checkpoint_every": steps,
            "keep_last": 1,
            "logger": "none",
            "progress": False,
        },
    }


def _stage(
    name: str,
    steps: int,
    budget: Budget,
    seed: int,
    sources: list[tuple[str, str, float]],
    condition_on: str = "understanding",
    family: str = DEFAULT_FAMILY,
) -> Stage:
    """A stage reading ``sources`` = [(objective, stream role, ratio)]; each source gets enough items to
    never repeat one within the stage."""
    recipe = base_recipe(name, steps, budget, seed, family)
    recipe["objective"]["condition_on"] = condition_on
    streams = {}
    for objective, role, ratio in sources:
        stream = Stream(stream_seed(seed, role), budget.caption_mode, steps * budget.batch_size)
        source_name = f"world:{role}:seed{stream.seed}:{stream.caption_mode}"
        recipe["data"]["sources"].append(_source(source_name, objective, ratio))
        streams[source_name] = stream
    recipe_from_dict(recipe)  # every stage is a valid recipe before anything trains
    return Stage(name=name, recipe=recipe, streams=streams)


def reca_t2i_mix(budget: Budget, family: str = DEFAULT_FAMILY) -> tuple[float, ...]:
    """RecA+T2I's source ratios: t2i : recon : i2t for Janus; t2i : recon for flow, where i2t's share
    goes to recon (the family has no image->text objective), so the RecA share stays the same."""
    t2i, recon, i2t = budget.mix_ratios
    return (t2i, recon, i2t) if "i2t" in reca_objectives(family) else (t2i, recon + i2t)


def t2i_steps_in_mix(seed: int, steps: int, ratios: tuple[float, ...], t2i_index: int = 0) -> int:
    """How many of ``steps`` micro-steps (grad_accum 1) the trainer gives to source ``t2i_index``."""
    return sum(source_for_step(seed, step, list(ratios)) == t2i_index for step in range(steps))


def build_arm(name: str, budget: Budget, seed: int = 0, family: str = DEFAULT_FAMILY) -> Arm:
    """One arm's definition for a training seed and model family (see the module table)."""
    check_family(family)
    if name not in family_arms(family):
        known = ", ".join(family_arms(family))
        raise KeyError(f"unknown arm {name!r} for family {family!r} (known: {known})")
    s, r, total = budget.sft_steps, budget.reca_steps, budget.total_steps
    stage = functools.partial(_stage, budget=budget, seed=seed, family=family)
    objectives = reca_objectives(family)
    reca_sources = [(objective, objective, 1.0) for objective in objectives]
    reca_what = " + ".join(RECA_WORDS[o] for o in objectives)
    reca_what += " 1:1" if len(reca_sources) > 1 else " only"
    sft = stage("sft", s, sources=[("t2i", "t2i", 1.0)])
    reca_after_sft = stage("reca", r, sources=reca_sources)
    mix = reca_t2i_mix(budget, family)
    arm = functools.partial(Arm, family=family)
    if name == BASE:
        return arm(BASE, "the shipped base, untrained further", ())
    if name == SFT:
        return arm(SFT, f"text->image on {budget.caption_mode} captions, {s} steps", (sft,))
    if name == SFT_RECA:
        return arm(
            SFT_RECA,
            f"SFT ({s} steps), then RecA: {reca_what} ({r} steps)",
            (sft, reca_after_sft),
        )
    if name == SFT_MATCHED:
        more = stage("sft-more", r, sources=[("t2i", "t2i-more", 1.0)])
        return arm(
            SFT_MATCHED,
            f"SFT ({s} steps), then {r} more SFT steps on fresh captions",
            (sft, more),
            controls=f"{SFT_RECA}: same {total} steps x batch {budget.batch_size}, the RecA stage replaced by SFT",
        )
    if name == SFT_HALF:
        half = t2i_steps_in_mix(seed, total, mix)
        # A short mix can draw no T2I step at all; the control is then the base, said as such.
        stages = (stage("sft-half", half, sources=[("t2i", "t2i", 1.0)]),) if half else ()
        return arm(
            SFT_HALF,
            f"text->image only, {half} steps" + ("" if half else " (the base itself)"),
            stages,
            controls=f"{RECA_T2I}: its {half} T2I steps of {total} at seed {seed}, without "
            + "/".join(objectives),
        )
    if name == RECA:
        return arm(RECA, f"{reca_what}, {total} steps", (stage("reca", total, sources=reca_sources),))
    if name == RECA_T2I:
        roles = ("t2i", "recon", "i2t")[: len(mix)]
        sources = [(role, role, ratio) for role, ratio in zip(roles, mix, strict=True)]
        ratio = ":".join(f"{x:g}" for x in mix)
        return arm(
            RECA_T2I,
            f"{' : '.join(roles)} = {ratio}, {total} steps",
            (stage("reca-t2i", total, sources=sources),),
        )
    # RECA_VQ (families whose adapter has vq_ablation: family_arms)
    vq = stage("reca-vq", total, sources=reca_sources, condition_on="vq_embeddings")
    return arm(RECA_VQ, f"as RecA, conditioned on the VQ codes' embeddings: {VQ_ABLATION_LABEL}", (vq,))


def build_arms(
    names: tuple[str, ...] | list[str], budget: Budget, seed: int = 0, family: str = DEFAULT_FAMILY
) -> list[Arm]:
    return [build_arm(name, budget, seed, family) for name in names]


def stage_key(stage: Stage, start: str) -> str:
    """Identity of a trained stage: its recipe and streams, and the checkpoint (or stage key) it starts from."""
    recipe = copy.deepcopy(stage.recipe)
    recipe["train"].pop("output_dir", None)
    recipe.pop("name", None)  # two arms' identical stages (SFT-half with H = S is SFT) train once
    payload = {
        "recipe": recipe,
        "streams": {k: vars(v) for k, v in sorted(stage.streams.items())},
        "start": start,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    objectives = "+".join(src["objective"] for src in stage.recipe["data"]["sources"])
    return f"{objectives}-{digest}"


@dataclass
class StepAccount:
    """One row of the report's step accounting."""

    arm: str
    stages: list[str] = field(default_factory=list)  # "sft: t2i 60 steps" ...
    steps: int = 0
    batch_size: int = 0
    t2i_steps: int = 0
    controls: str = ""


def step_account(arm: Arm) -> StepAccount:
    """Optimizer steps per stage and objective (T2I steps counted exactly, as the trainer draws them)."""
    account = StepAccount(arm=arm.label, controls=arm.controls)
    for stage in arm.stages:
        train, sources = stage.recipe["train"], stage.recipe["data"]["sources"]
        ratios = tuple(src["ratio"] for src in sources)
        objectives = [src["objective"] for src in sources]
        mix = ":".join(objectives) + (f" ({':'.join(f'{x:g}' for x in ratios)})" if len(sources) > 1 else "")
        account.stages.append(f"{stage.name}: {mix}, {train['steps']} steps")
        account.steps += train["steps"]
        account.batch_size = train["batch_size"]
        if "t2i" in objectives:
            account.t2i_steps += t2i_steps_in_mix(
                train["seed"], train["steps"], ratios, objectives.index("t2i")
            )
    return account
