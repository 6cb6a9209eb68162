"""Model families behind the UnifiedModel protocol: one lazy table, one package per family.

``FAMILIES`` maps a family name to its adapter class as ``"module:Class"``; :func:`family_class` imports
it only when asked (an adapter module pulls in torch, transformers, diffusers). Every per-family fact
(frozen modules, RecA objectives, sampling defaults, the shipped ShapeWorld base, what the main command
runs, how a checkpoint folder says it is of this family) is a class attribute of the adapter, declared
on :class:`reca_eval.models.protocol.FamilyFacts`. Adding a family = one package under
``reca_eval/models/`` plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

FAMILIES: dict[str, str] = {
    "janus": "reca_eval.models.janus.adapter:JanusAdapter",
    "flow": "reca_eval.models.flow.adapter:FlowAdapter",
    "qwen_image_edit": "reca_eval.models.qwen_image_edit.adapter:QwenImageEditAdapter",
    "harmon": "reca_eval.models.harmon.adapter:HarmonAdapter",
}
# The family whose experiment arms keep plain labels (``SFT``, not ``janus/SFT``: records written before
# there were several families read as before) and whose base a bare ``--base PATH`` names.
DEFAULT_FAMILY = "janus"


def check_family(name: str) -> None:
    """KeyError naming the known families when ``name`` is not one."""
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")


def check_families(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without repeats, in order; ValueError when none is given or one is unknown."""
    unique = tuple(dict.fromkeys(names))
    unknown = [n for n in unique if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown {unknown} (known: {', '.join(FAMILIES)})")
    if not unique:
        raise ValueError("none given")
    return unique


def family_class(name: str) -> type:
    """The adapter class of family ``name``, imported on first use."""
    check_family(name)
    module, _, attr = FAMILIES[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if getattr(cls, "family", None) != name:
        raise AssertionError(f"FAMILIES[{name!r}] names {cls.__name__}, whose family is {cls.family!r}")
    return cls


def shapeworld_families() -> tuple[str, ...]:
    """Families that ship a ShapeWorld base and say what the main command trains (table order): the
    default of ``reca-eval demo`` and ``reca-eval experiment``. Imports every family's adapter."""
    return tuple(
        name
        for name in FAMILIES
        if family_class(name).shapeworld_asset is not None and family_class(name).main_arms
    )
