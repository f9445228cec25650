"""Open-Sora 1.2 VAE decoder (export/families/vae.py) and its streaming stages (export/stages/vae.py).

* a random state dict in the published layout (decoder, scale/shift and the encoder side) loads with no missing or
  unexpected tensor, and decodes exactly as the model it came from; an extra or a missing decoder tensor is
  refused naming it;
* the published config.json maps to the Open-Sora 1.2 defaults and back; depth-to-time is Open-Sora's rearrange,
  causal convs see no later frame and a chunk drops its leading padding frames;
* shapes: 5 latent frames -> 17 video frames, 8x spatial, a shorter last micro-frame chunk, the real preset's
  streaming plan at the On-device Sora latent (20 x 20 x 27) and its parameter counts;
* the stage chain (host loop over the stage groups, temporal convs and norms as 4-D ops) reproduces ``decode``
  within 3e-5; a shorter last micro-frame chunk is a second function of the same temporal stages (same names, the
  same weight tensors: no copy);
* latents or a denoiser the VAE cannot decode are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgetrim.export.families.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from edgetrim.export.families.vae import (
    ENCODER_PREFIXES,
    PRESETS,
    OpenSoraVAE,
    VAEConfig,
    build_preset,
    check_denoiser_match,
    depth_to_time,
    load_checkpoint,
    load_vae,
    save_checkpoint,
)
from edgetrim.export.stages.vae import (
    DecodeShape,
    decoder_stages,
    run_decode,
    streaming_plan,
)
from edgetrim.runtime.contract import FRAME_LATENTS, FRAMES, LATENT_CHUNK, TEMPORAL, temporal_function
from edgetrim.runtime.errors import UserError

TINY = PRESETS["tiny-vae"].config
# The config.json OpenSoraVAE_V1_2 saves: VideoAutoencoderPipelineConfig's fields with its arguments
# (opensora/models/vae/vae.py); transformers' own keys (torch_dtype, transformers_version) are ignored.
PUBLISHED_CONFIG = {
    "architectures": ["VideoAutoencoderPipeline"],
    "model_type": "VideoAutoencoderPipeline",
    "cal_loss": False,
    "freeze_vae_2d": False,
    "from_pretrained": None,
    "micro_frame_size": 17,
    "scale": [3.85, 2.32, 2.33, 3.06],
    "shift": [-0.1, 0.34, 0.27, 0.98],
    "vae_2d": {
        "type": "VideoAutoencoderKL",
        "from_pretrained": "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
        "subfolder": "vae",
        "micro_batch_size": 4,
    },
    "vae_temporal": {"type": "VAE_Temporal_SD", "from_pretrained": None},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's convolutions are too small to share: a second thread only spins (seconds on a busy host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> OpenSoraVAE:
    return build_preset("tiny-vae", seed=3)


def encoder_side(c: VAEConfig) -> dict[str, torch.Tensor]:
    """The encoder-side tensor names of the published file (Open-Sora's temporal Encoder + quant_conv, diffusers'
    Encoder + quant_conv), random one-element values: loading skips them by name, never reads them."""
    temporal, spatial = "temporal_vae.encoder.", "spatial_vae.module.encoder."
    resblock = ("norm1.weight", "norm1.bias", "conv1.conv.weight", "norm2.weight", "norm2.bias", "conv2.conv.weight")
    resnet = [f"{m}.{p}" for m in ("norm1", "conv1", "norm2", "conv2") for p in ("weight", "bias")]
    names = [f"{temporal}conv_in.conv.weight", f"{temporal}norm1.weight", f"{temporal}norm1.bias"]
    names += [f"{temporal}conv2.conv.{p}" for p in ("weight", "bias")]
    names += [f"temporal_vae.quant_conv.conv.{p}" for p in ("weight", "bias")]
    widths = [c.temporal_filters * m for m in c.temporal_multipliers]
    for i, width in enumerate(widths):
        names += [f"{temporal}block_res_blocks.{i}.{j}.{r}" for j in range(c.temporal_res_blocks) for r in resblock]
        if width != widths[max(i - 1, 0)]:
            names.append(f"{temporal}block_res_blocks.{i}.0.conv3.conv.weight")
        if i < len(widths) - 1 and c.temporal_downsample[i]:
            names += [f"{temporal}conv_blocks.{i}.conv.{p}" for p in ("weight", "bias")]
    names += [f"{temporal}res_blocks.{j}.{r}" for j in range(c.temporal_res_blocks) for r in resblock]
    for i, width in enumerate(c.spatial_channels):
        names += [f"{spatial}down_blocks.{i}.resnets.{j}.{r}" for j in range(c.spatial_layers) for r in resnet]
        if width != c.spatial_channels[max(i - 1, 0)]:
            names += [f"{spatial}down_blocks.{i}.resnets.0.conv_shortcut.{p}" for p in ("weight", "bias")]
        if i < len(c.spatial_channels) - 1:
            names += [f"{spatial}down_blocks.{i}.downsamplers.0.conv.{p}" for p in ("weight", "bias")]
    names += [f"{spatial}mid_block.resnets.{j}.{r}" for j in range(2) for r in resnet]
    attention = ("group_norm", "to_q", "to_k", "to_v", "to_out.0")
    names += [f"{spatial}mid_block.attentions.0.{m}.{p}" for m in attention for p in ("weight", "bias")]
    names += [f"{spatial}{m}.{p}" for m in ("conv_in", "conv_norm_out", "conv_out") for p in ("weight", "bias")]
    names += [f"spatial_vae.module.quant_conv.{p}" for p in ("weight", "bias")]
    gen = torch.Generator().manual_seed(7)
    return {name: torch.randn(1, generator=gen) for name in names}


def write_published(folder: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    return folder


def test_published_layout_loads_without_missing_or_unexpected(tiny, tmp_path):
    encoder = encoder_side(tiny.config)
    assert all(name.startswith(ENCODER_PREFIXES) for name in encoder)
    state = {**tiny.state_dict(), **encoder}
    folder = write_published(tmp_path / "ckpt", tiny.config.to_dict(), state)
    loaded, source = load_vae(str(folder))
    assert source.kind == "folder" and not source.random_weights
    assert loaded.config == tiny.config
    assert loaded.state_dict().keys() == tiny.state_dict().keys()
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in loaded.state_dict().items())
    z = torch.randn(1, 4, 5, 2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), tiny.decode(z))


def test_published_key_prefixes(tiny):
    prefixes = ("temporal_vae.post_quant_conv.conv.", "temporal_vae.decoder.", "spatial_vae.module.post_quant_conv.")
    names = list(tiny.state_dict())
    assert names[:2] == ["scale", "shift"]
    assert all(n.startswith((*prefixes, "spatial_vae.module.decoder.")) for n in names[2:])
    for name in (
        "temporal_vae.decoder.conv_blocks.1.conv.weight",  # level 2's upsampler (level 1 has none: Identity)
        "temporal_vae.decoder.block_res_blocks.2.0.conv3.conv.weight",  # 512 -> 256 shortcut of level 2
        "spatial_vae.module.decoder.mid_block.attentions.0.to_out.0.weight",
        "spatial_vae.module.decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
        "spatial_vae.module.decoder.up_blocks.0.upsamplers.0.conv.weight",
    ):
        assert name in names
    assert "temporal_vae.decoder.conv_blocks.0.conv.weight" not in names
    assert "spatial_vae.module.decoder.up_blocks.3.upsamplers.0.conv.weight" not in names


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("extra", "temporal_vae.decoder.extra_block.weight"),
        ("missing", "spatial_vae.module.decoder.conv_out.bias"),
        ("extra", "spatial_vae.module.decoderx.conv_in.weight"),
    ],
)
def test_extra_or_missing_decoder_tensor_is_refused_by_name(tiny, tmp_path, change, named):
    state = {**tiny.state_dict(), **encoder_side(tiny.config)}
    if change == "extra":
        state[named] = torch.zeros(2)
    else:
        del state[named]
    folder = write_published(tmp_path / "bad", tiny.config.to_dict(), state)
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        load_checkpoint(folder)


def test_scale_and_shift_come_from_config_when_the_weights_lack_them(tiny, tmp_path):
    saved = load_file(str(save_checkpoint(tiny, tmp_path / "ckpt") / WEIGHTS_FILE))
    del saved["scale"], saved["shift"]
    config = tiny.config.to_dict() | {"scale": [1.0, 2.0, 3.0, 4.0], "shift": [0.5, 0.0, -0.5, 1.0]}
    loaded = load_checkpoint(write_published(tmp_path / "no-norm", config, saved))
    assert loaded.scale.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert loaded.shift.flatten().tolist() == [0.5, 0.0, -0.5, 1.0]


def test_config_is_the_published_one():
    real = VAEConfig.from_dict(PUBLISHED_CONFIG)
    assert real == VAEConfig()
    assert real.to_dict() == PUBLISHED_CONFIG
    assert (real.scale, real.shift) == ((3.85, 2.32, 2.33, 3.06), (-0.1, 0.34, 0.27, 0.98))
    assert (real.scaling_factor, real.micro_frame_size, real.micro_batch_size) == (0.18215, 17, 4)
    assert (real.time_factor, real.space_factor, real.micro_latent_frames) == (4, 8, 5)
    assert VAEConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    assert VAEConfig.from_dict(PUBLISHED_CONFIG | {"scale": 2.0}).scale == (2.0,) * 4  # one number for all channels
    unchained = PUBLISHED_CONFIG | {"vae_temporal": {"type": "VAE_Temporal_SD", "in_out_channels": 4}}
    with pytest.raises(UserError, match="do not chain"):
        VAEConfig.from_dict(unchained | {"vae_2d": {"latent_channels": 8}})


def test_latent_and_video_frame_counts():
    real = VAEConfig()
    assert [real.latent_frames(n) for n in (1, 17, 22, 51, 68, 102)] == [1, 5, 7, 15, 20, 30]
    assert [real.video_frames(t) for t in (1, 5, 7, 15, 20, 30)] == [1, 17, 22, 51, 68, 102]


def test_decode_shapes(tiny):
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for latent_frames, frames in ((5, 17), (7, 22), (1, 1)):
            z = torch.randn(1, 4, latent_frames, 2, 3, generator=gen)
            video = tiny.decode(z)
            assert video.shape == (1, 3, frames, 16, 24)
            assert video.abs().max() < 10
        assert tiny.frame_chunks(12, 40) == [(5, 17), (5, 17), (2, 6)]
        assert tiny.decode(torch.randn(1, 4, 7, 2, 3, generator=gen), num_frames=24).shape[2] == 24


def test_depth_to_time_is_open_soras_rearrange():
    x = torch.arange(6 * 3 * 2).float().reshape(1, 6, 3, 1, 2)  # channels (C=3, ts=2), 3 frames
    y = depth_to_time(x, 2)
    assert y.shape == (1, 3, 6, 1, 2)
    for c in range(3):
        for t in range(3):
            for s in range(2):  # "B (C ts) T H W -> B C (T ts) H W"
                assert torch.equal(y[0, c, t * 2 + s], x[0, c * 2 + s, t])


def test_causal_conv_sees_no_later_frame_and_decode_drops_leading_frames(tiny):
    """GroupNorm pools over a chunk's frames, so causality holds per conv: output frame t of a causal conv
    depends on input frames <= t only; a 17-frame chunk drops the 3 padding frames in front (VAE_Temporal.decode)."""
    conv = tiny.temporal_vae.decoder.conv1
    x = torch.randn(1, 4, 5, 2, 3, generator=torch.Generator().manual_seed(5))
    moved = x.clone()
    moved[:, :, 3] += 1.0
    with torch.no_grad():
        changed = (conv(moved) - conv(x)).abs().amax(dim=(0, 1, 3, 4)) > 1e-5
        assert changed.tolist() == [False, False, False, True, True]
        full = tiny.temporal_vae.decoder(tiny.temporal_vae.post_quant_conv(x))
        assert full.shape[2] == 20
        assert torch.equal(tiny.temporal_vae.decode(x, 17), full[:, :, 3:])


def test_real_preset_parameters_and_streaming_plan():
    with torch.device("meta"):
        real = OpenSoraVAE(VAEConfig())
    # the decode half of diffusers' AutoencoderKL (SD / SDXL VAE: 83,653,863 with the encoder side)
    assert sum(p.numel() for p in real.spatial_vae.parameters()) == 49_490_199
    assert sum(p.numel() for p in real.temporal_vae.parameters()) == 165_265_944
    plan = {row["stage"]: row for row in streaming_plan(decoder_stages(real, DecodeShape(1, 20, 20, 27)))}
    assert list(plan) == [
        *(f"temporal_{s}" for s in ("head", "block_3", "block_2", "block_1", "block_0")),
        *(f"spatial_{s}" for s in ("head", "up_0", "up_1", "up_2", "up_3")),
    ]
    assert plan["temporal_head"]["invocations"] == 4 and plan["spatial_head"]["invocations"] == 17
    assert plan["temporal_head"]["inputs"] == {LATENT_CHUNK: (5, 4, 20, 27)}  # frames in (B T) order
    assert plan["temporal_block_3"]["outputs"] == {"temporal_01": (10, 512, 20, 27)}
    assert plan["temporal_block_0"]["outputs"] == {FRAME_LATENTS: (17, 4, 20, 27)}
    assert plan["spatial_up_2"]["outputs"] == {"spatial_03": (4, 256, 160, 216)}
    assert plan["spatial_up_3"]["outputs"] == {FRAMES: (4, 3, 160, 216)}
    total = sum(row["weight_bytes"] for row in plan.values())
    # every weight in exactly one stage (+ scale, shift and the three upsamplers' [1, 1, 1, 2] ones)
    assert total == 4 * (49_490_199 + 165_265_944 + 8 + 3 * 2)


def test_stage_chain_reproduces_decode(tiny):
    shape = DecodeShape(batch=2, latent_frames=7, height=2, width=3, micro_batch=3)
    groups = decoder_stages(tiny, shape)
    assert [(g.name, g.function, g.invocations, g.input_shape) for g in groups] == [
        ("temporal", "latents_5", 1, (10, 4, 2, 3)),  # 2 samples x 5 latent frames, (B T) order
        ("temporal", "latents_2", 1, (4, 4, 2, 3)),  # the shorter last chunk: another function, same stages
        ("spatial", None, 15, (3, 4, 2, 3)),  # 2 x 22 frames in micro-batches of 3, the last padded
    ]
    full, last, _ = groups
    assert (full.function, last.function) == (temporal_function(5), temporal_function(2))
    assert list(full.stages) == list(last.stages) and all(name.startswith(TEMPORAL) for name in full.stages)
    for name, stage in full.stages.items():  # one copy of the weights: every tensor the model's own
        tensors = [*stage.parameters(), *stage.buffers()]
        others = [*last.stages[name].parameters(), *last.stages[name].buffers()]
        assert [t.data_ptr() for t in tensors] == [t.data_ptr() for t in others]
    z = torch.randn(2, 4, 7, 2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = tiny.decode(z)
        chained = run_decode(groups, z)
    assert chained.shape == reference.shape == (2, 3, 22, 16, 24)
    assert (chained - reference).abs().max() < 3e-5  # 4-D rewrite of the temporal convs: other summation order


def test_bad_latents_and_denoiser_mismatch_are_refused(tiny):
    with pytest.raises(UserError, match="latent channels"):
        tiny.decode(torch.zeros(1, 8, 5, 2, 3))
    with pytest.raises(UserError, match="not 7"):
        tiny.frame_chunks(7, 40)
    check_denoiser_match(VAEConfig(), 4, 5)
    with pytest.raises(UserError, match="4-channel latents but the denoiser makes 8") as refused:
        check_denoiser_match(VAEConfig(), 8, 5)
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match="temporal factor 8"):
        check_denoiser_match(VAEConfig(temporal_downsample=(True, True, True)), 4, 5)
