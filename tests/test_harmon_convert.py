"""Conversion from the official Harmon layout, on state dicts built here with the official names and shapes.

The official names are enumerated below from the official modules' structure (Harmon's ``llm`` /
``mar`` / ``proj_in`` / ``proj_out``, MAR's ViT blocks and diffusion MLP, LDM's KL autoencoder), not from
our modules, so a naming mistake on either side shows. The real 0.5B and 1.5B sizes are checked on the
meta device (no memory); a tiny configuration with the same key structure is converted and loaded for real.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from transformers import Qwen2ForCausalLM

from reca_eval.models.flow.tiny import build_tiny_qwen_tokenizer
from reca_eval.models.harmon.adapter import HarmonConfig, projectors
from reca_eval.models.harmon.convert import (
    ConversionError,
    build_from_parts,
    check_harmon_state,
    check_vae_state,
    convert_ldm_vae,
    convert_official_state_dict,
    infer_size,
    official_configs,
    official_variant,
)
from reca_eval.models.harmon.mar import MAR
from reca_eval.models.harmon.tiny import tiny_kl_vae, tiny_mar_config, tiny_qwen2
from reca_eval.models.protocol import Condition, SamplingConfig


def official_mar_shapes(cfg, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    enc, dec, w, c = cfg.encoder_embed_dim, cfg.decoder_embed_dim, cfg.diffloss_w, cfg.token_embed_dim
    seq = cfg.grid * cfg.grid
    shapes = {
        "class_emb.weight": (classes, enc),
        "fake_latent": (1, enc),
        "z_proj.weight": (enc, c),
        "z_proj.bias": (enc,),
        "z_proj_ln.weight": (enc,),
        "z_proj_ln.bias": (enc,),
        "encoder_pos_embed_learned": (1, seq + cfg.buffer_size, enc),
        "encoder_norm.weight": (enc,),
        "encoder_norm.bias": (enc,),
        "decoder_embed.weight": (dec, enc),
        "decoder_embed.bias": (dec,),
        "mask_token": (1, 1, dec),
        "decoder_pos_embed_learned": (1, seq + cfg.buffer_size, dec),
        "decoder_norm.weight": (dec,),
        "decoder_norm.bias": (dec,),
        "diffusion_pos_embed_learned": (1, seq, dec),
    }
    for side, width, depth in (("encoder", enc, cfg.encoder_depth), ("decoder", dec, cfg.decoder_depth)):
        hidden = int(width * cfg.mlp_ratio)
        for i in range(depth):
            p = f"{side}_blocks.{i}."
            shapes.update(
                {
                    p + "norm1.weight": (width,),
                    p + "norm1.bias": (width,),
                    p + "attn.qkv.weight": (3 * width, width),
                    p + "attn.qkv.bias": (3 * width,),
                    p + "attn.proj.weight": (width, width),
                    p + "attn.proj.bias": (width,),
                    p + "norm2.weight": (width,),
                    p + "norm2.bias": (width,),
                    p + "mlp.fc1.weight": (hidden, width),
                    p + "mlp.fc1.bias": (hidden,),
                    p + "mlp.fc2.weight": (width, hidden),
                    p + "mlp.fc2.bias": (width,),
                }
            )
    n = "diffloss.net."
    shapes.update(
        {
            n + "time_embed.mlp.0.weight": (w, 256),
            n + "time_embed.mlp.0.bias": (w,),
            n + "time_embed.mlp.2.weight": (w, w),
            n + "time_embed.mlp.2.bias": (w,),
            n + "cond_embed.weight": (w, dec),
            n + "cond_embed.bias": (w,),
            n + "input_proj.weight": (w, c),
            n + "input_proj.bias": (w,),
            n + "final_layer.linear.weight": (2 * c, w),
            n + "final_layer.linear.bias": (2 * c,),
            n + "final_layer.adaLN_modulation.1.weight": (2 * w, w),
            n + "final_layer.adaLN_modulation.1.bias": (2 * w,),
        }
    )
    for i in range(cfg.diffloss_d):
        p = f"{n}res_blocks.{i}."
        shapes.update(
            {
                p + "in_ln.weight": (w,),
                p + "in_ln.bias": (w,),
                p + "mlp.0.weight": (w, w),
                p + "mlp.0.bias": (w,),
                p + "mlp.2.weight": (w, w),
                p + "mlp.2.bias": (w,),
                p + "adaLN_modulation.1.weight": (3 * w, w),
                p + "adaLN_modulation.1.bias": (3 * w,),
            }
        )
    return shapes


def official_vae_shapes(ch: int, ch_mult, z: int, res_blocks: int, attn_level: int) -> dict[str, tuple]:
    """LDM's KL autoencoder: Encoder(attn after each block of level ``attn_level``), Decoder (no level
    attention), quant convs; the discriminator's ``loss.*`` weights ride along in the real file."""
    shapes: dict[str, tuple] = {}

    def conv(name, cin, cout, k):
        shapes[name + ".weight"] = (cout, cin, k, k)
        shapes[name + ".bias"] = (cout,)

    def norm(name, c):
        shapes[name + ".weight"] = (c,)
        shapes[name + ".bias"] = (c,)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cin, cout, 3)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(name + ".nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(name + ".norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    levels = len(ch_mult)
    conv("encoder.conv_in", 3, ch, 3)
    block_in = ch
    for i, mult in enumerate(ch_mult):
        for j in range(res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", block_in, ch * mult)
            block_in = ch * mult
            if i == attn_level:
                attn(f"encoder.down.{i}.attn.{j}", block_in)
        if i != levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    for side in ("encoder", "decoder"):
        top = ch * ch_mult[-1]
        resnet(f"{side}.mid.block_1", top, top)
        attn(f"{side}.mid.attn_1", top)
        resnet(f"{side}.mid.block_2", top, top)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, 2 * z, 3)
    conv("decoder.conv_in", z, ch * ch_mult[-1], 3)
    block_in = ch * ch_mult[-1]
    for i in reversed(range(levels)):
        for j in range(res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, 3, 3)
    conv("quant_conv", 2 * z, 2 * z, 1)
    conv("post_quant_conv", z, z, 1)
    shapes["loss.discriminator.main.0.weight"] = (64, 3, 4, 4)
    return shapes


def official_harmon_shapes(llm: Qwen2ForCausalLM, config: HarmonConfig) -> dict[str, tuple]:
    # Harmon's `llm` is the stock AutoModelForCausalLM of Qwen2.5, so its names are transformers' own.
    shapes = {f"llm.{k}": tuple(v.shape) for k, v in llm.state_dict().items()}
    shapes.update({f"mar.{k}": v for k, v in official_mar_shapes(config.mar).items()})
    enc, hid = config.mar.encoder_embed_dim, llm.config.hidden_size
    shapes.update(
        {
            "proj_in.0.weight": (hid, enc),
            "proj_in.0.bias": (hid,),
            "proj_in.2.weight": (hid, hid),
            "proj_in.2.bias": (hid,),
            "proj_out.0.weight": (hid, hid),
            "proj_out.0.bias": (hid,),
            "proj_out.2.weight": (enc, hid),
            "proj_out.2.bias": (enc,),
        }
    )
    return shapes


def ours_on_meta(llm_config, config: HarmonConfig, vae_kwargs) -> dict[str, dict[str, tuple]]:
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(llm_config)
        mar = MAR(config.mar)
        proj_in, proj_out = projectors(config.mar.encoder_embed_dim, llm_config.hidden_size)
        vae = AutoencoderKL(**vae_kwargs)
    modules = {"llm": llm, "mar": mar, "proj_in": proj_in, "proj_out": proj_out, "vae": vae}
    return {n: {k: tuple(v.shape) for k, v in m.state_dict().items()} for n, m in modules.items()}


@pytest.mark.parametrize("variant", ["0.5b", "1.5b"])
def test_official_names_and_shapes_map_onto_ours(variant):
    llm_config, config, vae_kwargs = official_configs(variant)
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(llm_config)
    harmon = {k: torch.empty(s, device="meta") for k, s in official_harmon_shapes(llm, config).items()}
    vae = {
        k: torch.empty(s, device="meta")
        for k, s in official_vae_shapes(128, (1, 1, 2, 2, 4), 16, 2, 4).items()
    }
    parts = convert_official_state_dict(harmon, vae)
    ours = ours_on_meta(llm_config, config, vae_kwargs)
    for name, expected in ours.items():
        got = {k: tuple(v.shape) for k, v in parts[name].items()}
        assert got == expected, (name, sorted(set(got) ^ set(expected))[:6])
    llm_params = sum(torch.Size(s).numel() for k, s in ours["llm"].items() if k != "lm_head.weight")
    # Qwen2.5-0.5B has 0.49B parameters, Qwen2.5-1.5B 1.54B (tied output head).
    assert round(llm_params / 1e7) == (49 if variant == "0.5b" else 154)


def tiny_config() -> HarmonConfig:
    return HarmonConfig(image_size=32, num_iterations=3, mar=tiny_mar_config(grid=4))


def test_tiny_official_state_dict_converts_and_loads(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    tokenizer = build_tiny_qwen_tokenizer()
    llm = tiny_qwen2(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    harmon = {k: 0.02 * torch.randn(s) for k, s in official_harmon_shapes(llm, config).items()}
    # A KL autoencoder with the official key structure at small width: 3 levels, attention at the last.
    vae = {k: 0.02 * torch.randn(s) for k, s in official_vae_shapes(16, (1, 1, 2), 4, 1, 2).items()}
    parts = convert_official_state_dict(harmon, vae, vae_levels=3)
    vae_kwargs = tiny_kl_vae(4, (16, 16, 32), 8).config
    vae_kwargs = {k: vae_kwargs[k] for k in ("down_block_types", "up_block_types", "block_out_channels",
                                            "layers_per_block", "latent_channels", "norm_num_groups")}  # fmt: skip
    adapter = build_from_parts(parts, tokenizer, llm.config, config, vae_kwargs)
    # Values land where the names say: LDM's finest decoder level is diffusers' last up block, and a
    # 1x1-conv attention weight becomes the linear one.
    torch.testing.assert_close(
        adapter.vae.decoder.up_blocks[2].resnets[0].conv1.weight, vae["decoder.up.0.block.0.conv1.weight"]
    )
    torch.testing.assert_close(
        adapter.vae.encoder.down_blocks[2].attentions[0].to_q.weight,
        vae["encoder.down.2.attn.0.q.weight"][:, :, 0, 0],
    )
    torch.testing.assert_close(
        adapter.mar.encoder_blocks[0].attn.qkv.weight, harmon["mar.encoder_blocks.0.attn.qkv.weight"]
    )
    torch.testing.assert_close(adapter.proj_out[2].weight, harmon["proj_out.2.weight"])
    tokens = adapter.sample_tokens([Condition.text("red")], SamplingConfig(guidance_scale=3.0))
    assert tokens.shape == (1, 64, 4) and torch.isfinite(tokens).all()
    adapter.save_pretrained(tmp_path / "converted")
    assert (tmp_path / "converted" / "config.json").is_file()


def test_unexpected_official_keys_are_named():
    with pytest.raises(ValueError, match="unexpected key"):
        convert_official_state_dict({"llm.model.norm.weight": torch.zeros(2), "ema.shadow": torch.zeros(1)})


def test_ldm_vae_drops_the_discriminator():
    out = convert_ldm_vae(
        {"loss.discriminator.main.0.weight": torch.zeros(1), "quant_conv.bias": torch.zeros(2)}
    )
    assert list(out) == ["quant_conv.bias"]


def official_on_meta(variant: str) -> dict[str, torch.Tensor]:
    """The official harmon_<variant>.pth as key -> meta tensor (no memory)."""
    llm_config, config, _ = official_configs(variant)
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(llm_config)
    return {k: torch.empty(s, device="meta") for k, s in official_harmon_shapes(llm, config).items()}


def test_real_sizes_are_inferred_from_their_shapes():
    assert infer_size(official_on_meta("0.5b"), "harmon_0.5b.pth") == "0.5b"
    assert infer_size(official_on_meta("1.5b"), "harmon_1.5b.pth") == "1.5b"


@pytest.mark.parametrize(("given", "actual"), [("1.5b", "0.5b"), ("0.5b", "1.5b")])
def test_a_real_size_checked_as_the_other_names_the_keys_and_suggests_its_size(given, actual):
    state = official_on_meta(actual)
    assert check_harmon_state(state, actual, "w.pth").name == actual
    with pytest.raises(ConversionError) as info:
        check_harmon_state(state, given, "w.pth")
    message = str(info.value)
    width = {"0.5b": 896, "1.5b": 1536}
    assert message.startswith(f"w.pth: not Harmon-{given} weights: ")
    assert (
        f"llm.model.embed_tokens.weight has shape [151936, {width[actual]}], expected [151936, {width[given]}]"
        in message
    )
    assert message.endswith(f"it fits Harmon-{actual}: pass --size {actual}")


def test_a_release_missing_part_of_a_size_fits_none():
    state = official_on_meta("1.5b")
    del state["proj_out.2.bias"]
    with pytest.raises(ConversionError, match=r"fits no Harmon size \(0.5b, 1.5b\); against the closest, 1.5b: "
                       r"1 key\(s\) differ: proj_out.2.bias is missing"):  # fmt: skip
        infer_size(state, "w.pth")


def test_the_kl16_vae_passes_and_another_kl_vae_is_named():
    kl16 = {
        k: torch.empty(s, device="meta")
        for k, s in official_vae_shapes(128, (1, 1, 2, 2, 4), 16, 2, 4).items()
    }
    converted = check_vae_state(kl16, official_variant("1.5b"), "kl16.ckpt")
    assert converted["encoder.down_blocks.4.attentions.0.to_q.weight"].shape == (512, 512)
    # MAR's other KL release: 4 latent channels, 8x down-sampling (kl8 in LDM's naming).
    kl8 = {
        k: torch.empty(s, device="meta") for k, s in official_vae_shapes(128, (1, 2, 2, 4), 4, 2, 3).items()
    }
    with pytest.raises(ConversionError) as info:
        check_vae_state(kl8, official_variant("1.5b"), "kl8.ckpt")
    message = str(info.value)
    assert message.startswith("kl8.ckpt: not a KL-16 VAE (16 latent channels, 16x down-sampling): ")
    assert "encoder.conv_out.weight has shape [8, 512, 3, 3], expected [32, 512, 3, 3]" in message
