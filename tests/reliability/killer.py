"""Run `reca-eval ARGS` in this process and kill it with SIGKILL at a chosen point (for the fault tests).

    python -m tests.reliability.killer POINT ARGS...

POINT is ``replace:<substring>`` (just before the os.replace/os.rename whose destination contains it:
the atomic writes and the run folder's rename into place), ``image:<n>`` (when the n-th image is read,
mid-scoring) or ``none``.
"""

from __future__ import annotations

import os
import signal
import sys


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    kind, _, arg = point.partition(":")
    if kind == "replace":
        for name in ("replace", "rename"):
            real = getattr(os, name)

            def wrapped(src, dst, *a, _real=real, **k):
                if arg in os.fspath(dst):
                    _kill()
                return _real(src, dst, *a, **k)

            setattr(os, name, wrapped)
    elif kind == "image":
        from reca_eval.core import images

        real_load = images.load_rgb
        seen = [0]

        def load(*a, **k):
            seen[0] += 1
            if seen[0] == int(arg):
                _kill()
            return real_load(*a, **k)

        images.load_rgb = load
        import reca_eval.benchmarks.edit.layout as edit_layout
        import reca_eval.benchmarks.geneval.layout as geneval_layout

        edit_layout.load_rgb = load
        geneval_layout.load_rgb = load


def main() -> None:
    point, args = sys.argv[1], sys.argv[2:]
    if point != "none":
        arm(point)
    from reca_eval.cli import app

    app(args, prog_name="reca-eval")


if __name__ == "__main__":
    main()
