"""`run NAME --ckpt PATH`: generation into the official layout, sharding and resume, then scoring."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from reca_eval import registry  # noqa: E402
from reca_eval.cli import app  # noqa: E402
from reca_eval.evaluation.generate import Shard, generate_for_benchmark, item_seed  # noqa: E402
from reca_eval.models.janus.adapter import JanusAdapter  # noqa: E402
from reca_eval.models.janus.tiny import build_tiny_janus  # noqa: E402

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    model, processor = build_tiny_janus(seed=0, image_size=32)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-janus"
    JanusAdapter(model, processor).save_pretrained(path)
    return path


def few_items(name: str, n: int = 3) -> list[dict]:
    bench = registry.get(name)
    return bench.load_items(bench.default_items())[:n]


def test_seeds_do_not_depend_on_sharding():
    assert item_seed(0, 5, 1) == item_seed(0, 5, 1)
    assert len({item_seed(0, i, k) for i in range(50) for k in range(4)}) == 200
    assert [i for i in range(10) if Shard(1, 3).owns(i)] == [1, 4, 7]


def test_sharded_generation_equals_one_process_and_resumes(tiny_ckpt, tmp_path):
    bench = registry.get("shapes-geneval")
    items = few_items("shapes-geneval", 3)
    generate_for_benchmark(bench, items, tiny_ckpt, tmp_path / "one", shard=Shard(0, 1), batch_size=5)
    for index in range(2):
        generate_for_benchmark(bench, items, tiny_ckpt, tmp_path / "two", shard=Shard(index, 2), batch_size=3)
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(one) == 3 * bench.images_per_prompt
    for rel in one:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    # A killed run: one image truncated, one missing, a stale temp file. Only those are regenerated.
    first, second = (tmp_path / "one" / one[0]), (tmp_path / "one" / one[1])
    kept = tmp_path / "one" / one[2]
    kept_mtime = kept.stat().st_mtime_ns
    original = first.read_bytes()
    first.write_bytes(original[:30])
    second.unlink()
    stale = first.parent / f".{first.name}.abc123"
    stale.write_bytes(b"partial")
    generate_for_benchmark(bench, items, tiny_ckpt, tmp_path / "one", shard=Shard(0, 1))
    assert first.read_bytes() == original and second.exists() and not stale.exists()
    assert kept.stat().st_mtime_ns == kept_mtime


def test_run_with_ckpt_generates_and_scores(tiny_ckpt, tmp_path):
    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(json.dumps(it) + "\n" for it in few_items("shapes-geneval", 4)))
    result = runner.invoke(
        app,
        [
            "run",
            "shapes-geneval",
            "--ckpt",
            str(tiny_ckpt),
            "--items",
            str(items_path),
            "--results",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["images_scored"] == 16 and record["images_skipped"] == 0
    assert record["model"] == str(tiny_ckpt) and len(record["seeds"]) == 16
    assert 0.0 <= record["scores"]["overall"] <= 1.0


def test_edit_generation_conditions_on_the_source_image(tiny_ckpt, tmp_path, monkeypatch):
    from reca_eval.models.protocol import ImageEmbeds

    bench = registry.get("shapes-edit")
    first, *rest = few_items("shapes-edit", 20)
    # several items edit the same source scene: take two whose sources (and instructions) differ
    items = [
        first,
        next(
            it
            for it in rest
            if it["source_scene"] != first["source_scene"] and bench.prompt_of(it) != bench.prompt_of(first)
        ),
    ]
    seen = []
    real_generate = JanusAdapter.generate

    def recording(self, conditions, sampling):
        seen.extend(conditions)
        return real_generate(self, conditions, sampling)

    monkeypatch.setattr(JanusAdapter, "generate", recording)
    generate_for_benchmark(bench, items, tiny_ckpt, tmp_path / "edit")
    assert sorted(p.name for p in (tmp_path / "edit").glob("*.png")) == sorted(
        f"{it['item_id']}_0.png" for it in items
    )
    # Each image is generated from its own source's understanding embeddings, then its instruction.
    adapter = JanusAdapter.from_pretrained(tiny_ckpt)
    assert len(seen) == 2
    expected = []
    by_text = {condition.segments[-1]: condition for condition in seen}
    for item in items:
        image, text = by_text[bench.prompt_of(item)].segments
        assert isinstance(image, ImageEmbeds)
        with torch.no_grad():
            own = adapter.understanding_embeddings(adapter.preprocess([bench.source_image_of(item)]))[0]
        torch.testing.assert_close(image.embeds, own)
        expected.append(own)
    assert not torch.equal(expected[0], expected[1])  # the two sources do differ


def test_two_process_run_writes_one_folder_identical_to_one_process(tiny_ckpt, tmp_path):
    """`torchrun --nproc_per_node 2 -m reca_eval.cli run ... --ckpt`: shards share one run folder, the
    main process scores once, and the images equal a one-process run's byte for byte."""
    import os
    import subprocess
    import sys

    items_path = tmp_path / "items.jsonl"
    items_path.write_text("".join(json.dumps(it) + "\n" for it in few_items("shapes-geneval", 3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["run", "shapes-geneval", "--ckpt", str(tiny_ckpt), "--items", str(items_path)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*torchrun, "-m", "reca_eval.cli", *args, "--results", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    one = runner.invoke(app, [*args, "--results", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    (two_run,) = (tmp_path / "two" / "runs").iterdir()  # one folder, one record
    (one_run,) = (tmp_path / "one" / "runs").iterdir()
    two_images = sorted(p.relative_to(two_run) for p in two_run.rglob("*.png"))
    assert two_images == sorted(p.relative_to(one_run) for p in one_run.rglob("*.png"))
    assert len(two_images) == 12
    for rel in two_images:
        assert (two_run / rel).read_bytes() == (one_run / rel).read_bytes(), rel
    two_record = json.loads((two_run / "record.json").read_text())
    one_record = json.loads((one_run / "record.json").read_text())
    assert (
        two_record["scores"] == one_record["scores"]
        and two_record["images_sha256"] == one_record["images_sha256"]
    )
