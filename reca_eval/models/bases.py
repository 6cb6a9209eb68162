"""Which checkpoint each model family starts from: ``FAMILY=PATH`` specs and the shipped ShapeWorld bases.

    parse_base_specs(["flow=/ckpt/flow", "janus=/ckpt/janus"])  # {"flow": Path(...), "janus": Path(...)}
    resolve_bases(("janus", "flow"), given)                     # given, else each family's shipped base

A spec without a family (``/ckpt/janus``) names the base of :data:`reca_eval.models.DEFAULT_FAMILY`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from reca_eval.models import DEFAULT_FAMILY, FAMILIES, family_class


def _reads_as_path(prefix: str) -> bool:
    """Whether the text before the first ``=`` of a spec is a path (``runs/lr=1e-4``), not a family."""
    return prefix.startswith((".", "~")) or "/" in prefix or os.sep in prefix


def parse_base_specs(values: Iterable[str]) -> dict[str, Path]:
    """``FAMILY=PATH`` strings -> {family: path}; a bare ``PATH`` is the default family's base.
    ValueError for an unknown family, an empty path, or one family given twice."""
    bases: dict[str, Path] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep or (family not in FAMILIES and _reads_as_path(family)):
            family, path = DEFAULT_FAMILY, value
        elif family not in FAMILIES:
            raise ValueError(
                f"unknown family {family!r} in {value!r}; expected FAMILY=PATH with FAMILY one of "
                f"{', '.join(FAMILIES)} (a path holding '=' reads as {DEFAULT_FAMILY}=PATH when it starts "
                "with ./ or /)"
            )
        if not path.strip():
            raise ValueError(f"no path in {value!r}; expected FAMILY=PATH")
        if family in bases:
            raise ValueError(f"two bases for family {family!r}: {bases[family]} and {path}")
        bases[family] = Path(path)
    return bases


def resolve_base(family: str, path: Path | None = None) -> Path:
    """``path``, or else the family's shipped ShapeWorld base; FileNotFoundError unless it is a
    save_pretrained folder (has a config.json), saying how to get one."""
    cls = family_class(family)
    if path is None:
        path = cls.shipped_base_path()
        if path is None:
            raise FileNotFoundError(f"family {family!r} ships no ShapeWorld base: give one as {family}=PATH")
    path = Path(path)
    if not (path / "config.json").exists():
        build = (
            f", or build the shipped one with `{cls.shapeworld_build}`"
            if cls.shapeworld_build and path == cls.shipped_base_path()
            else ""
        )
        raise FileNotFoundError(
            f"no {family} base checkpoint at {path} (config.json missing); give one as {family}=PATH, "
            f"leave the family out{build}"
        )
    return path


def resolve_bases(families: Sequence[str], given: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """{family: base} for every family in ``families``: the one ``given``, else the shipped one.
    ValueError for a base given for a family that is not run."""
    given = dict(given or {})
    unused = [f for f in given if f not in families]
    if unused:
        raise ValueError(
            f"a base is given for {', '.join(unused)}, which is not among the families run "
            f"({', '.join(families)})"
        )
    return {family: resolve_base(family, given.get(family)) for family in families}
