"""Model families: the lazy FAMILIES table, per-family facts on the adapter classes, `FAMILY=PATH` bases,
and what adding a family takes (one adapter class + one table line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reca_eval.models import FAMILIES, check_families, family_class, shapeworld_families
from reca_eval.models.bases import parse_base_specs, resolve_base, resolve_bases

pytest.importorskip("torch")

from reca_eval.experiments.arms import (  # noqa: E402
    ALL_ARMS,
    RECA_VQ,
    SFT_RECA,
    Budget,
    build_arm,
    family_arms,
)
from reca_eval.experiments.runner import plan_families  # noqa: E402
from reca_eval.models.protocol import FamilyFacts  # noqa: E402
from tests.toy_model import ToyUnifiedModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_imports_no_adapter_until_asked():
    code = (
        "import sys, reca_eval.models, reca_eval.models.bases\n"
        "assert not [m for m in sys.modules if m.startswith(('torch', 'transformers', 'diffusers'))]\n"
        "assert 'reca_eval.models.flow.adapter' not in sys.modules\n"
        "reca_eval.models.check_families(['janus', 'flow'])\n"
        "assert 'reca_eval.models.janus.adapter' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_family_names_its_own_class_and_unknown_ones_are_refused():
    for name in FAMILIES:
        cls = family_class(name)
        assert cls.family == name and issubclass(cls, FamilyFacts)
    with pytest.raises(KeyError, match="unknown model family 'mar'"):
        family_class("mar")
    with pytest.raises(ValueError, match="mar"):
        check_families(["janus", "mar"])
    assert check_families(["flow", "janus", "flow"]) == ("flow", "janus")


def test_per_family_facts_are_the_ones_the_experiments_used():
    janus, flow = family_class("janus"), family_class("flow")
    assert janus.frozen_modules == ("vision", "aligner", "vqmodel")
    assert flow.frozen_modules == ("vlm", "vae")
    assert janus.reca_objectives == ("recon", "i2t") and flow.reca_objectives == ("recon",)
    assert janus.vq_ablation and not flow.vq_ablation
    assert family_arms("janus") == ALL_ARMS and RECA_VQ not in family_arms("flow")
    assert (janus.default_guidance_scale, flow.default_guidance_scale) == (5.0, 3.0)
    assert janus.shipped_base_path() == ROOT / "reca_eval" / "assets" / "shapeworld-base"
    assert flow.shipped_base_path() == ROOT / "reca_eval" / "assets" / "shapeworld-flow-base"
    assert family_class("qwen_image_edit").shipped_base_path() is None
    assert janus.main_arms == ("base", "SFT", "SFT+RecA", "SFT-matched", "SFT-half")
    assert janus.main_benchmarks == ("shapes-geneval", "shapes-dpg", "shapes-edit")
    assert flow.main_arms == ("base", "SFT", "SFT+RecA", "SFT-matched")
    assert flow.main_benchmarks == ("shapes-edit",)
    harmon = family_class("harmon")
    assert harmon.shipped_base_path() == ROOT / "reca_eval" / "assets" / "shapeworld-harmon-base"
    assert harmon.main_arms == janus.main_arms and harmon.main_benchmarks == ("shapes-geneval", "shapes-dpg")
    assert harmon.reca_objectives == ("recon", "i2t") and harmon.frozen_modules == ("vae",)
    assert shapeworld_families() == ("janus", "flow", "harmon")
    for name in shapeworld_families():
        assert set(family_class(name).main_arms) <= set(family_arms(name))


def test_base_specs_parse_family_equals_path_and_a_bare_path_is_the_janus_base():
    assert parse_base_specs(["flow=/ckpt/f", "janus=/ckpt/j"]) == {
        "flow": Path("/ckpt/f"),
        "janus": Path("/ckpt/j"),
    }
    assert parse_base_specs(["/ckpt/j"]) == {"janus": Path("/ckpt/j")}
    assert parse_base_specs(["runs/lr=1e-4/final"]) == {"janus": Path("runs/lr=1e-4/final")}
    with pytest.raises(ValueError, match="unknown family 'mar'"):
        parse_base_specs(["mar=/x"])
    with pytest.raises(ValueError, match="no path"):
        parse_base_specs(["flow="])
    with pytest.raises(ValueError, match="two bases for family 'flow'"):
        parse_base_specs(["flow=/a", "flow=/b"])


def test_bases_default_to_the_shipped_ones_and_a_missing_one_says_so(tmp_path):
    assert resolve_bases(("janus", "flow")) == {
        "janus": family_class("janus").shipped_base_path(),
        "flow": family_class("flow").shipped_base_path(),
    }
    with pytest.raises(FileNotFoundError, match="no flow base checkpoint at"):
        resolve_base("flow", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="ships no ShapeWorld base"):
        resolve_base("qwen_image_edit")
    with pytest.raises(ValueError, match="flow, which is not among the families run"):
        resolve_bases(("janus",), {"flow": tmp_path})


# ------------------------------------------------------------------ adding a family: a class + a line


class ToyFamily(ToyUnifiedModel, FamilyFacts):
    family = "toy"
    model_types = ("toy_unified",)
    frozen_modules = ("vision", "vq")
    reca_objectives = ("recon", "i2t")
    default_guidance_scale = 2.0
    main_arms = ("base", "SFT", "SFT+RecA")
    main_benchmarks = ("shapes-edit",)


def test_a_new_family_is_one_adapter_class_and_one_table_line(monkeypatch, tmp_path):
    from reca_eval.models.loading import detect_family

    monkeypatch.setitem(FAMILIES, "toy", "tests.test_model_families:ToyFamily")
    arm = build_arm(SFT_RECA, Budget(sft_steps=4, reca_steps=2, batch_size=2), family="toy")
    assert arm.label == "toy/SFT+RecA"
    assert [s.recipe["model"]["freeze"] for s in arm.stages] == [["vision", "vq"]] * 2
    assert [src["objective"] for src in arm.stages[1].recipe["data"]["sources"]] == ["recon", "i2t"]
    assert RECA_VQ not in family_arms("toy")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy_unified"}))
    assert detect_family(tmp_path) == "toy"
    (plan,) = plan_families(["toy"], {"toy": tmp_path})
    assert (plan.arms, plan.benchmarks, plan.guidance_scale) == (ToyFamily.main_arms, ("shapes-edit",), 2.0)


# ------------------------------------------------------------------------------------------ the CLI


def test_cli_base_option_takes_family_equals_path_and_names_itself_in_errors(tmp_path):
    from typer.testing import CliRunner

    from reca_eval.cli import app

    EXIT_BAD_INPUT = 2  # documented (README)

    runner = CliRunner()
    for command in ("demo", "experiment"):
        help_text = runner.invoke(app, [command, "--help"], terminal_width=200).output
        assert "FAMILY=PATH" in help_text and "--flow-base" not in help_text
        bad = runner.invoke(app, [command, "--families", "janus", "--base", "mar=/x"])
        assert bad.exit_code == EXIT_BAD_INPUT and "--base" in bad.output and "mar" in bad.output
        missing = runner.invoke(app, [command, "--families", "janus", "--base", f"janus={tmp_path}"])
        assert missing.exit_code == EXIT_BAD_INPUT and "--base" in missing.output
        assert "no janus base" in missing.output
        unused = runner.invoke(app, [command, "--families", "janus", "--base", f"flow={tmp_path}"])
        assert unused.exit_code == EXIT_BAD_INPUT and "--base" in unused.output


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "reca_eval.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "demo" in out.stdout and "diagnose" in out.stdout
