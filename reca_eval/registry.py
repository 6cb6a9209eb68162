"""The benchmark registry: an index of ``benchmark.yaml`` files; an implementation is imported on ``get()``.

Each benchmark is a folder holding a ``benchmark.yaml`` (name, version, task, layout, images per
prompt, resolution, categories, needed extra, ``implementation: "module:function"``, data sources)
and, for shipped benchmarks, its items. Folders are searched in the shipped benchmarks
(``benchmarks/`` of a checkout, or the copy inside an installed wheel) and then in every folder named
by ``$RECA_EVAL_BENCHMARKS`` (``os.pathsep``-separated), which is how a user adds their own. Listing
reads only the YAML files (as lm-evaluation-harness's task index does); scoring imports the one
implementation it needs.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path

from reca_eval.core import paths
from reca_eval.core.spec import Benchmark, BenchmarkSpec, SpecError, read_spec

USER_BENCHMARKS_ENV = "RECA_EVAL_BENCHMARKS"
SPEC_FILE = "benchmark.yaml"

_BUILT: dict[tuple[Path, str], Benchmark] = {}


def benchmark_roots() -> list[Path]:
    """The folders searched for ``<name>/benchmark.yaml``, shipped benchmarks first."""
    roots = [paths.BENCHMARKS_DIR]
    extra = os.environ.get(USER_BENCHMARKS_ENV, "")
    roots += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    return roots


def specs() -> dict[str, BenchmarkSpec]:
    """name -> spec of every benchmark found; two folders declaring one name is an error naming both.

    The YAML files are parsed once per (path, modification time): lookups in a loop cost a stat each.
    """
    files: list[tuple[str, int]] = []
    for root in benchmark_roots():
        if not root.is_dir():
            if root != paths.BENCHMARKS_DIR:
                raise SpecError(f"${USER_BENCHMARKS_ENV}: {root} is not a folder")
            continue
        files += [(str(path), path.stat().st_mtime_ns) for path in sorted(root.glob(f"*/{SPEC_FILE}"))]
    return dict(_index(tuple(files)))


@functools.lru_cache(maxsize=8)
def _index(files: tuple[tuple[str, int], ...]) -> tuple[tuple[str, BenchmarkSpec], ...]:
    found: dict[str, BenchmarkSpec] = {}
    for path, _ in files:
        spec = read_spec(Path(path))
        if spec.name in found:
            raise SpecError(
                f"benchmark {spec.name!r} is declared twice: {found[spec.name].folder / SPEC_FILE} and {path}"
            )
        found[spec.name] = spec
    return tuple(sorted(found.items()))


def spec(name: str) -> BenchmarkSpec:
    known = specs()
    if name not in known:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
    return known[name]


def _build(found: BenchmarkSpec) -> Benchmark:
    module_name, _, attr = found.implementation.partition(":")
    where = f"{found.folder / SPEC_FILE}: implementation {found.implementation!r}"
    try:
        build = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise SpecError(f"{where} cannot be imported ({exc})") from exc
    except AttributeError:
        raise SpecError(f"{where}: module {module_name} has no {attr!r}") from None
    bench = build(found)
    if not isinstance(bench, Benchmark) or bench.name != found.name:
        raise SpecError(f"{where} did not return a Benchmark named {found.name!r}")
    return bench


def get(name: str) -> Benchmark:
    """The benchmark with its semantics; imports its implementation (once per spec file)."""
    found = spec(name)
    key = (found.folder, found.version)
    if key not in _BUILT:
        _BUILT[key] = _build(found)
    return _BUILT[key]


def all_benchmarks() -> list[Benchmark]:
    """Every benchmark with its semantics (imports every implementation; `specs()` does not)."""
    return [get(name) for name in specs()]
