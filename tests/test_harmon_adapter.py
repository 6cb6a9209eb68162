"""The Harmon adapter on tiny random configs built in code: losses, sampling, saving, RecA's condition."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from PIL import Image

from reca_eval.models.harmon.adapter import HarmonAdapter, latent_tokens
from reca_eval.models.harmon.diffusion import cosine_betas, spaced_timesteps
from reca_eval.models.harmon.mar import Block
from reca_eval.models.harmon.tiny import build_tiny_harmon
from reca_eval.models.loading import detect_family, load_unified_model
from reca_eval.models.protocol import Condition, ImageEmbeds, SamplingConfig

COLOURS = ((220, 30, 30), (30, 30, 220), (30, 200, 30))


def scene(colour, box=(6, 6, 22, 22)) -> Image.Image:
    img = Image.new("RGB", (32, 32), (250, 250, 250))
    img.paste(colour, box)
    return img


def off_zero_start(model: HarmonAdapter) -> HarmonAdapter:
    """The diffusion head starts with a zero output layer (no gradient reaches its input): perturb it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in model.mar.diffloss.net.final_layer.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.fixture(scope="module")
def model() -> HarmonAdapter:
    return build_tiny_harmon(seed=0)


@pytest.fixture(scope="module")
def latents(model):
    return model.generation_targets(model.preprocess([scene(c) for c in COLOURS[:2]]))


def test_family_facts_and_detection(tmp_path, model):
    assert model.family == "harmon" and model.frozen_modules == ("vae",)
    assert model.reca_objectives == ("recon", "i2t") and model.default_guidance_scale == 3.0
    model.save_pretrained(tmp_path / "ckpt")
    assert detect_family(tmp_path / "ckpt") == "harmon"


def test_initial_loss_near_its_expected_value(model, latents):
    # The diffusion head starts at zero output: the epsilon MSE is E[noise^2] = 1 per channel.
    torch.manual_seed(0)
    tokens = latent_tokens(latents)
    mask = model.training_mask(2, tokens.shape[1])
    z = model.decoder_states(model._prefix([Condition.text("red square")] * 2), tokens, mask)
    rows = tokens[mask.bool()].repeat(8, 1)
    t = torch.randint(0, 1000, (rows.shape[0],))
    mse, vb = model.mar.diffloss.train_diffusion.training_losses(
        model.mar.diffloss.net, rows, z[mask.bool()].repeat(8, 1), t, torch.randn_like(rows)
    )
    assert abs(float(mse.mean()) - 1.0) < 0.1
    assert torch.isfinite(vb).all() and float(vb.min()) >= 0.0


def test_training_mask_ratio_at_least_min(model):
    torch.manual_seed(1)
    fractions = [float(model.training_mask(3, 64).mean()) for _ in range(50)]
    assert min(fractions) >= 0.7 - 1e-6 and max(fractions) <= 1.0
    rows = model.training_mask(3, 64)
    assert len({int(r.sum()) for r in rows}) == 1  # one ratio per batch: equal visible counts per row


def test_masked_tokens_only_in_the_loss(latents):
    model = off_zero_start(build_tiny_harmon(seed=2))
    torch.manual_seed(2)
    tokens = latent_tokens(latents)
    mask = model.training_mask(2, tokens.shape[1])
    z = torch.randn(2, tokens.shape[1], model.config.mar.decoder_embed_dim, requires_grad=True)
    model.diffusion_loss(z, tokens, mask).backward()
    per_position = z.grad.abs().sum(-1)
    assert float(per_position[mask == 0].abs().max()) == 0.0
    assert float(per_position[mask == 1].abs().max()) > 0.0


def test_overfits_a_batch(latents):
    model = build_tiny_harmon(seed=3, diffusion_batch_mul=16)
    model.train()
    conditions = [Condition.text("red square"), Condition.text("blue square")]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(3)
    losses = []
    for _ in range(80):
        loss = model.generation_loss(conditions, latents)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_understanding_loss_trains(latents):
    model = build_tiny_harmon(seed=4)
    model.train()
    px = model.preprocess([scene(COLOURS[0]), scene(COLOURS[1])])
    texts = ["a red square", "a blue square"]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = model.understanding_loss(px, texts)
        first = first if first is not None else float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.3 * first


def test_sampling_shape_and_determinism(model):
    conditions = [Condition.text("red square"), Condition.text("a blue square on the left")]
    a = model.sample_tokens(conditions, SamplingConfig(guidance_scale=3.0, seed=7))
    b = model.sample_tokens(conditions, SamplingConfig(guidance_scale=3.0, seed=7))
    c = model.sample_tokens(conditions, SamplingConfig(guidance_scale=3.0, seed=8))
    assert a.shape == (2, 64, 4) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    images = model.generate(conditions, SamplingConfig(guidance_scale=3.0, seed=7))
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_an_image_does_not_depend_on_its_batch_mates(model):
    short = Condition.text("red square")
    long = Condition.text("a big blue square on the left of a small green circle")
    alone = model.sample_tokens([short], SamplingConfig(guidance_scale=3.0, seeds=[11]))
    batched = model.sample_tokens([long, short], SamplingConfig(guidance_scale=3.0, seeds=[5, 11]))
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-4)


def test_teacher_forced_step_equals_the_sampling_step(model, latents):
    torch.manual_seed(5)
    tokens = latent_tokens(latents)
    conditions = [Condition.text("red square"), Condition([ImageEmbeds(tokens[1]), "redraw it"])]
    prefix = model._prefix(conditions)
    mask = model.training_mask(2, tokens.shape[1])
    with torch.no_grad():
        forced = model.decoder_states(prefix, tokens, mask)
        cache = model.prefill(prefix)
        step = model.decoder_states(prefix, tokens, mask, cache=cache)
        again = model.decoder_states(prefix, tokens, mask, cache=cache)  # the cache was cropped back
    torch.testing.assert_close(step, forced, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, forced, atol=1e-5, rtol=1e-5)


def test_save_load_same_outputs(tmp_path, model, latents):
    model.save_pretrained(tmp_path / "h")
    loaded = load_unified_model(tmp_path / "h")
    assert isinstance(loaded, HarmonAdapter)
    sampling = SamplingConfig(guidance_scale=2.0, seed=3)
    conditions = [Condition.text("green square")]
    assert torch.equal(model.sample_tokens(conditions, sampling), loaded.sample_tokens(conditions, sampling))
    losses = []
    for m in (model, loaded):
        torch.manual_seed(9)
        losses.append(float(m.generation_loss([Condition.text("red")] * 2, latents)))
    assert losses[0] == losses[1]


def test_gradient_into_the_condition_is_scaled(latents):
    model = off_zero_start(build_tiny_harmon(seed=6))
    cond_latents = latent_tokens(latents)[0].clone()

    def grad(scale: float) -> torch.Tensor:
        model.config.grad_scale = scale
        x = cond_latents.clone().requires_grad_(True)
        torch.manual_seed(10)
        model.generation_loss([Condition([ImageEmbeds(x), "redraw"])], latents[:1]).backward()
        return x.grad

    full, scaled = grad(1.0), grad(0.1)
    assert float(full.abs().max()) > 0
    torch.testing.assert_close(scaled, 0.1 * full, rtol=1e-5, atol=1e-9)


def test_recon_condition_is_never_dropped(model, latents):
    from reca_eval.training.data import Example
    from reca_eval.training.objectives import FrozenEncoders, example_rng, recon_conditions
    from reca_eval.training.recipe import ObjectiveSpec

    spec = ObjectiveSpec(bottleneck="none", condition_dropout=0.5)
    encoders = FrozenEncoders(model, spec, torch.device("cpu"))
    examples = [Example(scene(COLOURS[i % 3]), "", f"h{i}", i) for i in range(40)]
    conditions = recon_conditions(encoders, examples, [example_rng(0, 0, i) for i in range(40)])
    texts = [c.segments[1] for c in conditions]
    assert all(isinstance(c.segments[0], ImageEmbeds) and len(c.segments) == 2 for c in conditions)
    dropped = sum(t == model.config.unconditional_prompt for t in texts)
    assert 5 <= dropped <= 35 and dropped < len(texts)  # only the instruction goes, about half the time


def test_default_recon_condition_drops_the_whole_condition():
    from reca_eval.models.protocol import FamilyFacts

    embeds = torch.zeros(4, 8)
    assert FamilyFacts().recon_condition("redraw", embeds, drop=True).segments == []
    kept = FamilyFacts().recon_condition("redraw", embeds, drop=False).segments
    assert kept[0] == "redraw" and isinstance(kept[1], ImageEmbeds)


def test_position_embeddings_interpolate_to_a_larger_grid(latents):
    model = build_tiny_harmon(seed=7, grid=4)  # learned for 4x4, used at 8x8 (Harmon: 16x16 at 32x32)
    torch.manual_seed(0)
    loss = model.generation_loss([Condition.text("red")] * 2, latents)
    assert torch.isfinite(loss)


def test_bad_condition_images_are_refused(model):
    with pytest.raises(ValueError, match="latent tokens"):
        model._prefix([Condition([ImageEmbeds(torch.zeros(10, 4)), "x"])])
    with pytest.raises(ValueError, match="top_k"):
        model.sample_tokens([Condition.text("x")], SamplingConfig(top_k=5))


def test_cosine_schedule_matches_diffusers():
    from diffusers import DDPMScheduler

    ours = cosine_betas(1000)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas
    torch.testing.assert_close(ours.float(), theirs.float())
    steps = spaced_timesteps(1000, 100)
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_vit_block_matches_timm():
    from timm.models.vision_transformer import Block as TimmBlock

    torch.manual_seed(0)
    theirs = TimmBlock(
        32, 4, 4.0, qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)
    ).eval()
    ours = Block(32, 4, 4.0, 0.0, 0.0).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(ours(x), theirs(x))


def test_decode_takes_targets_or_tokens(model, latents):
    from_latents = model.decode_images(latents)
    from_tokens = model.decode_images(latent_tokens(latents))
    assert [im.size for im in from_latents] == [(32, 32), (32, 32)]
    assert [im.tobytes() for im in from_latents] == [im.tobytes() for im in from_tokens]


def test_the_sampling_chain_can_leave_out_the_capped_last_step():
    from reca_eval.models.harmon.mar import MAR
    from reca_eval.models.harmon.tiny import tiny_mar_config

    official = MAR(tiny_mar_config(num_sampling_steps=25)).diffloss.gen_diffusion
    shapeworld = MAR(tiny_mar_config(num_sampling_steps=25, skip_capped_step=True)).diffloss.gen_diffusion
    assert int(official.timestep_map.max()) == 999 and int(shapeworld.timestep_map.max()) == 998
    assert official.num_timesteps == shapeworld.num_timesteps == 25
    # what an error in the first epsilon is multiplied by: 1 / sqrt(1 - beta) of the first sampling step
    amplification = [float((1 / (1 - d.betas[-1])).sqrt()) for d in (official, shapeworld)]
    assert amplification[0] > 1000 and amplification[1] < 50


def test_one_timestep_for_every_row_is_embedded_once_with_the_same_values(model):
    head = off_zero_start(build_tiny_harmon(seed=1)).mar.diffloss.net
    torch.manual_seed(2)
    x, z = torch.randn(6, head.input_proj.in_features), torch.randn(6, head.cond_embed.in_features)
    per_row = head(x, torch.full((6,), 417), z)
    shared = head(x, torch.tensor(417), z)  # a 0-d timestep: one embedding row, broadcast
    embedded = head(x, torch.tensor(417), head.embed_condition(z), embedded=True)
    assert head.time_embed(torch.tensor(417)).shape == (1, head.cond_embed.out_features)
    torch.testing.assert_close(shared, per_row, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(embedded, shared, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(per_row, head(x, torch.full((6,), 418), z))


def test_guided_rows_share_one_encoder_pass(model, latents):
    """With CFG each image has two prefix rows that see the same tokens; ``copies=2`` runs the MAR
    encoder once for both and gives what running it on the doubled batch gives."""
    torch.manual_seed(4)
    tokens = latent_tokens(latents)
    conditions = [Condition.text("red square"), Condition.text("a blue square")]
    prefix = model._prefix(conditions + [Condition([])] * 2)
    mask = model.training_mask(2, tokens.shape[1])
    with torch.no_grad():
        doubled = model.decoder_states(prefix, torch.cat([tokens, tokens]), torch.cat([mask, mask]))
        shared = model.decoder_states(prefix, tokens, mask, copies=2)
    assert shared.shape == doubled.shape == (4, tokens.shape[1], shared.shape[-1])
    torch.testing.assert_close(shared, doubled, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(shared[:2], shared[2:])  # the two copies read different prefixes
