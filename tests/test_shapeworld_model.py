"""The ShapeWorld model: vocabulary, shipped base, world stream and pooled condition states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import JanusForConditionalGeneration  # noqa: E402

from reca_eval.models.janus.adapter import JanusAdapter  # noqa: E402
from reca_eval.models.janus.shapeworld import (  # noqa: E402
    RESOLUTION,
    build_shapeworld_tokenizer,
    count_unknown_words,
    shapeworld_words,
    shipped_base_path,
    split_words,
    world_scene,
    world_source,
)
from reca_eval.models.janus.tiny import UNK_TOKEN, build_tiny_janus  # noqa: E402
from reca_eval.models.loading import load_unified_model  # noqa: E402
from reca_eval.models.protocol import Condition, ConditionStatesModel, ImageEmbeds, UnifiedModel  # noqa: E402
from reca_eval.shapeworld.captions import MODES, caption  # noqa: E402
from reca_eval.shapeworld.splits import sample_combo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_ITEMS = [
    REPO / "benchmarks" / n / "items.jsonl" for n in ("shapes-geneval", "shapes-dpg", "shapes-edit")
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base() -> JanusAdapter:
    if not (shipped_base_path() / "config.json").is_file():
        pytest.skip(f"no shipped base at {shipped_base_path()} (run trainers/pretrain_shapeworld.py)")
    model = load_unified_model(shipped_base_path())
    assert isinstance(model, JanusAdapter)
    return model


def _world_texts() -> list[str]:
    texts = [caption(world_scene(i), mode, i, hide_uncaptioned=False) for i in range(120) for mode in MODES]
    for path in BENCHMARK_ITEMS:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts += [item[k] for k in ("prompt", "instruction") if k in item]
    return texts


def test_shipped_tokenizer_round_trips_every_world_word(base):
    tok = base.processor.tokenizer
    texts = _world_texts()
    assert count_unknown_words(texts, tok) == {}
    for text in texts[:200] + texts[-50:]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.convert_ids_to_tokens(ids) == split_words(text)


def test_vocabulary_rebuilds_as_shipped(base):
    # The vocabulary is derived from the world's generators; a drift would silently re-map token ids.
    assert build_shapeworld_tokenizer().get_vocab() == base.processor.tokenizer.get_vocab()
    assert len(shapeworld_words()) == len(set(shapeworld_words()))


def test_unknown_words_map_to_unk_and_are_counted():
    tok = build_shapeworld_tokenizer()
    counts = count_unknown_words(["a zebra circle", "Zebra and a giraffe."], tok)
    assert counts == {"zebra": 2, "giraffe": 1}
    ids = tok("a zebra circle", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["a", UNK_TOKEN, "circle"]


def test_shipped_base_loads_plainly_and_through_the_adapter(base):
    path = shipped_base_path()
    plain = JanusForConditionalGeneration.from_pretrained(str(path))
    n_params = sum(p.numel() for p in plain.parameters())
    assert 0.5e6 < n_params < 3e6
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 20e6, f"shipped base is {size / 1e6:.1f} MB"
    assert isinstance(base, UnifiedModel) and isinstance(base, ConditionStatesModel)
    assert base.image_size == RESOLUTION and base.num_image_tokens == 64
    # Same weights both ways.
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(plain.state_dict()[key], base.model.state_dict()[key])


def test_world_source_is_deterministic_and_seeded():
    first = list(world_source(5, "dense", limit=4))
    again = list(world_source(5, "dense", limit=4))
    other = list(world_source(6, "dense", limit=4))
    assert [c for _, c in first] == [c for _, c in again]
    assert [c for _, c in first] != [c for _, c in other]
    assert all(im.size == (RESOLUTION, RESOLUTION) for im, _ in first)
    sparse = [c for _, c in world_source(5, "sparse", limit=4)]
    assert sum(len(c) for c in sparse) < sum(len(c) for _, c in first)  # sparse names less
    with pytest.raises(ValueError, match="unknown caption mode"):
        next(world_source(0, "poetic"))


def test_condition_hidden_states_shapes_and_pooling():
    model, processor = build_tiny_janus(seed=3)
    adapter = JanusAdapter(model, processor)
    pixels = adapter.preprocess([im for im, _ in world_source(0, "dense", limit=2, resolution=32)])
    feats = adapter.understanding_embeddings(pixels)
    conditions = [
        Condition.text("a red circle"),
        Condition(["Describe the image in detail.", ImageEmbeds(feats[0])]),
        Condition([ImageEmbeds(feats[1]), "make it blue"]),
    ]
    for layer in (-1, 0, 1, 2):
        states = adapter.condition_hidden_states(conditions, layer=layer)
        assert states.shape == (3, adapter.hidden_size)
        assert torch.isfinite(states).all()
    batched = adapter.condition_hidden_states(conditions)
    single = torch.cat([adapter.condition_hidden_states([c]) for c in conditions])
    assert torch.allclose(batched, single, atol=1e-5)  # left padding does not leak into the pool
    # Layer 0 is the input: the mean of the caption's own word embeddings (template tokens left out).
    ids = processor.tokenizer(" a red circle", add_special_tokens=False)["input_ids"]
    expected = model.get_input_embeddings()(torch.tensor(ids)).mean(0)
    assert torch.allclose(adapter.condition_hidden_states(conditions[:1], layer=0)[0], expected, atol=1e-6)
    # An image-only condition pools its image embeddings alone at layer 0.
    only_image = adapter.condition_hidden_states([Condition([ImageEmbeds(feats[0])])], layer=0)[0]
    assert torch.allclose(only_image, feats[0].mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="empty Condition"):
        adapter.condition_hidden_states([Condition([])])
    with pytest.raises(ValueError, match="layer must be"):
        adapter.condition_hidden_states(conditions, layer=7)


def test_vq_training_picks_the_codes_encode_picks():
    from reca_eval.models.janus.shapeworld import build_shapeworld_model
    from trainers.pretrain_shapeworld import scene_batch, vq_forward

    model, _ = build_shapeworld_model(seed=1)
    vq = model.model.vqmodel
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(
            torch.nn.functional.normalize(vq.quantize.embedding.weight, dim=-1)
        )
        x, dense, sparse = scene_batch(1, 0, 3)
        recon, _, ids = vq_forward(vq, x)
        assert torch.equal(ids.view(3, -1), vq.encode(x).image_tokens.view(3, -1))
        # Decoding those ids is the forward pass the VQ stage trained.
        assert torch.allclose(vq.decode(ids.view(3, -1)), recon, atol=1e-4)
    assert len(dense) == len(sparse) == 3 and x.shape == (3, 3, RESOLUTION, RESOLUTION)


def test_vq_candidate_choice_prefers_exact_round_trips_then_the_smaller_codebook():
    from trainers.pretrain_shapeworld import best_candidate

    def row(size, parse, pixels):
        return {"codebook_size": size, "held_out/exact_parse": parse, "held_out/exact_pixels": pixels}

    assert best_candidate([row(256, 0.2, 0.9), row(1024, 0.5, 0.1)])["codebook_size"] == 1024
    assert best_candidate([row(256, 0.5, 0.1), row(1024, 0.5, 0.3)])["codebook_size"] == 1024
    assert best_candidate([row(4096, 0.5, 0.3), row(1024, 0.5, 0.3)])["codebook_size"] == 1024


def test_planned_steps_fit_the_cap_and_never_grow():
    from trainers.pretrain_shapeworld import planned_steps

    # 40 steps done in 10 s, 0.1 s/step: 60 s cap leaves 50 s -> 50/(0.1*1.1) = 454 more steps.
    assert planned_steps(10_000, 40, 10.0, 0.1, 1.0, "t") == 40 + 454
    assert planned_steps(100, 40, 10.0, 0.1, 1.0, "t") == 100
    assert planned_steps(100, 40, 70.0, 0.1, 1.0, "t") == 41  # already over the cap: stop next step


def test_joint_batches_start_at_first_scene_and_never_overlap_the_base():
    """A continued run (--init-from ... joint.first_scene=N) must see unseen scenes: batch i is scenes
    N + i*B .. of the training stream, so its training loss stays a held-out loss."""
    from trainers.pretrain_shapeworld import TRAIN_STREAM, JointBatches, scene_batch

    fresh, continued = JointBatches(4, 10), JointBatches(4, 10, first_scene=8)
    assert continued[0][1] == fresh[2][1]  # scene 8 = batch 2 of a run that started at 0
    assert continued[1][1] == scene_batch(TRAIN_STREAM, 12, 4)[1]
    assert continued[0][1] != fresh[0][1]
    with pytest.raises(ValueError, match="first_scene"):  # would spill into the held-out stream
        JointBatches(1024, 10_000, first_scene=1_000_000)


def test_pretraining_command_smoke(tmp_path):
    from trainers.pretrain_shapeworld import main

    out, export = tmp_path / "run", tmp_path / "base"
    config = Path(__file__).resolve().parents[1] / "trainers" / "recipes" / "shapeworld_base.yaml"
    overrides = [
        "device=cpu",
        "threads=1",
        f"output_dir={out}",
        f"export_dir={export}",
        "vq.steps=2",
        "vq.batch_size=2",
        "vq.pool=4",
        "vq.eval_scenes=4",
        "vq.codebook_sizes=[64,128]",  # two candidates: the parallel sweep path
        "joint.steps=2",
        "joint.batch_size=2",
        "joint.data_workers=1",
        "joint.log_every=1",
        "joint.checkpoint_every=2",
        "joint.eval_scenes=24",
    ]
    assert main([str(config), *overrides]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in rows) == ["joint", "joint", "vq", "vq"]
    sweep = json.loads((out / "vq_sweep.json").read_text())
    assert sorted(r["codebook_size"] for r in sweep["candidates"]) == [64, 128]
    chosen = sweep["chosen"]
    assert json.loads((export / "config.json").read_text())["vq_config"]["num_embeddings"] == chosen
    assert all(rows[-1][k] > 0 for k in ("loss/i2t", "loss/t2i", "loss/align"))
    assert 0.0 <= rows[-1]["probe/cross"] <= 1.0
    assert isinstance(load_unified_model(export), JanusAdapter)
    assert main([str(config), "joint.nope=1"]) == 2  # unknown keys are refused

    # --init-from: the joint stage continues an exported model (no VQ stage), its VQ untouched
    more, again = tmp_path / "more", tmp_path / "base2"
    joint_only = [o for o in overrides if o.startswith(("device", "threads", "joint."))]
    argv = [str(config), "--init-from", str(export), f"output_dir={more}", f"export_dir={again}", *joint_only]
    assert main(argv) == 0
    stages = [json.loads(line)["stage"] for line in (more / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["joint", "joint"]
    before, after = JanusAdapter.from_pretrained(export).model, JanusAdapter.from_pretrained(again).model
    vq_before, vq_after = before.model.vqmodel.state_dict(), after.model.vqmodel.state_dict()
    assert all(torch.equal(vq_before[k], vq_after[k]) for k in vq_before)
    trunk = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(before.state_dict()[trunk], after.state_dict()[trunk])
    assert main([str(config), "--init-from", str(tmp_path / "nowhere"), f"output_dir={more}"]) == 2

    # joint.stop_at replays an interrupted run: it stops at step 2 of a schedule planned over 4 steps
    stopped = tmp_path / "stopped"
    argv = [str(config), "--init-from", str(export), f"output_dir={stopped}", f"export_dir={stopped / 'x'}"]
    assert main([*argv, *joint_only, "joint.steps=4", "joint.stop_at=2"]) == 0
    rows = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    ran_to_two = [json.loads(line) for line in (more / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["lr"] > ran_to_two[-1]["lr"]  # mid-schedule, not the end of a 2-step schedule
    assert (stopped / "joint_checkpoint.pt").exists()


def test_world_scene_redraws_a_scene_without_layout():
    """Training scene 355,785 of stream 2 (id 20355785) draws four large objects whose first random
    layout search fails; it crashed a pre-training run on the GPU. The id now names a redrawn scene."""
    import random

    from reca_eval.shapeworld.scene import NoLayout, random_scene

    scene_id = 20355785
    rng = random.Random(f"shapeworld-scene:{scene_id}")
    combos = [sample_combo(rng) for _ in range(rng.randint(1, 4))]
    with pytest.raises(NoLayout):
        random_scene(rng.randrange(2**31), combos=combos)  # the first draw: the old crash
    scene = world_scene(scene_id)
    assert [(o.shape, o.colour) for o in scene.objects] == combos
    assert world_scene(scene_id) == scene  # still one scene per id
