"""End-to-end runs of the trainer on the toy model (and the tiny Janus): equivalences, resume after
SIGKILL, 2-process DDP, NaN stop, LoRA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reca_eval.training.checkpoint import STATE_FILE, latest_checkpoint, list_checkpoints
from reca_eval.training.loop import TrainingDiverged, train
from reca_eval.training.recipe import recipe_from_dict
from tests.toy_model import build_toy, load_toy, make_image_folder, toy_recipe_dict

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def final_state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_grad_accumulation_matches_a_larger_batch(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 12)
    big = train(recipe_from_dict(toy_recipe_dict(root, tmp_path / "a", steps=4, batch_size=4, grad_accum=1)))
    accum = train(
        recipe_from_dict(toy_recipe_dict(root, tmp_path / "b", steps=4, batch_size=2, grad_accum=2))
    )
    assert accum.losses == pytest.approx(big.losses, abs=1e-6)
    assert_close_states(final_state(big.final_dir), final_state(accum.final_dir), atol=1e-6)
    # and training moved the weights (the comparison is not between two untouched models)
    start = build_toy().state_dict()
    assert not torch.allclose(final_state(big.final_dir)["gen_head.weight"], start["gen_head.weight"])


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 8)
    raw = toy_recipe_dict(root, tmp_path / "out", steps=10, checkpoint_every=2, keep_last=5)
    raw["model"]["kwargs"] = {"nan_at_call": 5}  # steps 1-4 are fine, step 5 is NaN
    with pytest.raises(TrainingDiverged, match=r"step 5\b.*step-00000004"):
        train(recipe_from_dict(raw))
    ckpts = list_checkpoints(tmp_path / "out" / "checkpoints")
    assert [step for step, _ in ckpts] == [2, 4]
    last = latest_checkpoint(tmp_path / "out" / "checkpoints")
    state = json.loads((last / STATE_FILE).read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4
    weights = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (tmp_path / "out" / "final").exists()


def test_lora_adapter_and_merged_exports(tmp_path):
    from peft import PeftModel

    root = make_image_folder(tmp_path / "imgs", 8)
    lora = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["language_model.0", "gen_head"]}
    raw = toy_recipe_dict(root, tmp_path / "adapter", steps=3)
    raw["model"]["lora"] = {**lora, "save": "adapter"}
    adapter = train(recipe_from_dict(raw))
    files = sorted(p.name for p in adapter.final_dir.iterdir())
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files
    saved = load_file(str(adapter.final_dir / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)

    raw = toy_recipe_dict(root, tmp_path / "merged", steps=3)
    raw["model"]["lora"] = {**lora, "save": "merged"}
    merged = train(recipe_from_dict(raw))
    assert merged.losses == adapter.losses  # same seeds, same trajectory
    merged_model = load_toy(merged.final_dir)
    reloaded = PeftModel.from_pretrained(build_toy(), str(adapter.final_dir)).merge_and_unload()
    assert_close_states(merged_model.state_dict(), reloaded.state_dict(), atol=1e-6)
    base = build_toy().state_dict()
    merged_state = merged_model.state_dict()
    assert not torch.allclose(merged_state["gen_head.weight"], base["gen_head.weight"])  # LoRA folded in
    assert torch.equal(merged_state["text_head.weight"], base["text_head.weight"])  # untargeted: untouched


def resume_recipe(tmp_path: Path, root: Path, out: Path) -> Path:
    raw = toy_recipe_dict(root, out, steps=16, batch_size=2, checkpoint_every=4, keep_last=2)
    raw["model"]["kwargs"] = {"dropout": 0.3, "delay_s": 0.1}  # dropout uses torch's global RNG
    raw["data"]["sources"].append({"kind": "folder", "path": str(root), "objective": "i2t", "ratio": 1.0})
    raw["data"]["num_workers"] = 2
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["train"]["scheduler"] = "cosine"
    raw["train"]["warmup_steps"] = 2
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sigkill_then_resume_continues_on_exactly_the_same_trajectory(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 7)  # odd size: epochs straddle batches
    reference = train(
        recipe_from_dict(yaml.safe_load(resume_recipe(tmp_path, root, tmp_path / "ref").read_text()))
    )
    out = tmp_path / "killed"
    recipe_path = resume_recipe(tmp_path, root, out)
    cmd = [PYTHON, "-m", "reca_eval.training.loop", str(recipe_path)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 120
    try:
        while not (out / "checkpoints" / "step-00000008").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no checkpoint at step 8 within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "train_summary.json").exists()  # it really died mid-run
    killed_at = json.loads((latest_checkpoint(out / "checkpoints") / STATE_FILE).read_text())["step"]
    assert 8 <= killed_at < 16

    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith(f"step-{killed_at:08d}")
    assert summary["trained_steps_this_run"] == 16 - killed_at
    assert summary["losses"] == reference.losses  # step by step, exactly
    assert_close_states(final_state(out / "final"), final_state(reference.final_dir), atol=0.0)


def test_two_process_gloo_run_matches_one_process_with_the_same_global_batch(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 10)
    raw_one = toy_recipe_dict(root, tmp_path / "one", steps=4, batch_size=4, checkpoint_every=2)
    raw_one["data"]["sources"].append({"kind": "folder", "path": str(root), "objective": "i2t", "ratio": 1.0})
    one = train(recipe_from_dict(raw_one))
    raw_two = json.loads(json.dumps(raw_one))
    raw_two["train"].update(batch_size=2, output_dir=str(tmp_path / "two"))
    recipe_path = tmp_path / "two.yaml"
    recipe_path.write_text(yaml.safe_dump(raw_two))
    # `accelerate launch --cpu` starts a single process; torchrun starts two and accelerate joins them (gloo).
    launch = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launch += ["-m", "reca_eval.training.loop", str(recipe_path)]
    done = subprocess.run(launch, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = latest_checkpoint(tmp_path / "two" / "checkpoints")
    assert (ckpt / "random_states_0.pkl").exists() and (
        ckpt / "random_states_1.pkl"
    ).exists()  # two ranks ran
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["losses"] == pytest.approx(one.losses, abs=1e-5)
    assert_close_states(final_state(tmp_path / "two" / "final"), final_state(one.final_dir), atol=1e-5)


def test_vq_embedding_condition_is_labelled_as_the_ablation(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 4)
    raw = toy_recipe_dict(root, tmp_path / "out", steps=2)
    raw["objective"]["condition_on"] = "vq_embeddings"
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    result = train(recipe_from_dict(raw))
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert "copy/collapse ablation" in summary["condition_on"]


def test_on_finish_receives_the_exported_model_and_tensorboard_logs(tmp_path):
    root = make_image_folder(tmp_path / "imgs", 4)
    raw = toy_recipe_dict(root, tmp_path / "out", steps=2, logger="tensorboard")
    seen: list[Path] = []
    result = train(recipe_from_dict(raw), on_finish=seen.append)
    assert seen == [result.final_dir]
    assert load_toy(result.final_dir).gen_head.weight.shape == build_toy().gen_head.weight.shape
    assert list((tmp_path / "out").rglob("events.out.tfevents.*"))


def test_tiny_janus_reca_with_i2t_and_cache(tmp_path):
    pytest.importorskip("transformers")
    try:
        from reca_eval.models.janus.adapter import JanusAdapter  # noqa: F401
        from reca_eval.training.builders import tiny_janus  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"tiny Janus adapter not available: {exc}")
    from transformers import JanusForConditionalGeneration

    root = make_image_folder(tmp_path / "imgs", 6, size=32)
    for txt in root.glob("*.txt"):
        txt.write_text("a red circle above a blue square")
    raw = toy_recipe_dict(root, tmp_path / "out", steps=6, batch_size=2, lr=1e-3)
    raw["model"] = {
        "builder": "reca_eval.training.builders:tiny_janus",
        "freeze": ["vision", "aligner", "vqmodel"],
    }
    raw["data"]["sources"].append({"kind": "folder", "path": str(root), "objective": "i2t", "ratio": 1.0})
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["objective"]["bottleneck_size"] = 16
    result = train(recipe_from_dict(raw))
    assert len(result.losses) == 6 and all(l == l for l in result.losses)  # noqa: E741
    # The loss falls (4.87 -> 4.16 at seed 0): the unfrozen model learns from both objectives.
    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3 - 0.2, result.losses
    # One cache entry per drawn image and frozen output (understanding embeddings, VQ ids), each
    # written on its miss.
    entries = list((tmp_path / "cache").rglob("*.pt"))
    assert result.cache["misses"] == len(entries) > 0
    # A second run of the same recipe computes nothing frozen again, and the cached outputs are the
    # very values: the same losses step for step.
    raw["train"]["output_dir"] = str(tmp_path / "again")
    again = train(recipe_from_dict(raw))
    assert again.cache == {"hits": result.cache["hits"] + result.cache["misses"], "misses": 0}
    assert again.losses == pytest.approx(result.losses, rel=1e-6)
    reloaded = JanusForConditionalGeneration.from_pretrained(str(result.final_dir))  # native format
    assert reloaded.config.vision_config.image_size == 32
