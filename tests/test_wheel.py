"""The wheel is a working tool: built from this checkout, installed into a fresh venv, run elsewhere.

The fresh venv borrows this environment's dependencies through a ``.pth`` line (so the test needs no
network), but gets reca_eval only from the wheel; the commands run from a folder outside the checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("reca_eval-*.whl")
    return path


def test_wheel_installs_only_reca_eval_and_carries_benchmarks_and_recipes(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"reca_eval"}
    for needed in (
        "reca_eval/_data/benchmarks/shapes-geneval/benchmark.yaml",
        "reca_eval/_data/benchmarks/shapes-geneval/items.jsonl",
        "reca_eval/_data/benchmarks/shapes-dpg/questions.csv",
        "reca_eval/_data/benchmarks/shapes-edit/items.jsonl",
        "reca_eval/_data/benchmarks/geneval/benchmark.yaml",
        "reca_eval/_data/recipes/reca.yaml",
        "reca_eval/assets/shapeworld-base/model.safetensors",
        "reca_eval/assets/shapeworld-flow-base/vae/config.json",
        "reca_eval/assets/shapeworld-harmon-base/harmon.safetensors",
    ):
        assert needed in names, needed


def test_wheel_in_a_fresh_venv_renders_and_scores_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies from this environment; reca_eval itself only from the wheel (a plain path line in a
    # .pth does not run that folder's own .pth files, so an editable install there stays invisible).
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_borrowed_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [str(python), "-c", "import reca_eval; print(reca_eval.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(site) in where.stdout, where.stdout + where.stderr
    tool = str(env_dir / "bin" / "reca-eval")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, *args], cwd=work, env=env, capture_output=True, text=True)

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    for name in ("shapes-geneval", "shapes-dpg", "shapes-edit"):
        assert name in listed.stdout
    assert "fetch first" not in listed.stdout.split("shapes-dpg")[1].splitlines()[0]
    rendered = run("render-references", "shapes-geneval", "refs")
    assert rendered.returncode == 0, rendered.stderr
    scored = run("run", "shapes-geneval", "--images", "refs", "--results", "results", "--json")
    assert scored.returncode == 0, scored.stderr
    record = json.loads(scored.stdout)
    assert record["scores"]["overall"] == 1.0  # exact references score exactly 1
    assert not (ROOT / "refs").exists() and (work / "refs").is_dir()
