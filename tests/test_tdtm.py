"""TDTM reducer vs a loop reference, STDiT3 (tiny) checkpoint loading, and two-variant ONNX depth steps.

ExecuTorch (two methods) and CoreML (multifunction) depth steps are tested inside whole artifacts in
tests/test_video.py, exported once there.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgetrim.export.families.stdit3 import (
    STDiT3,
    STDiT3Config,
    VideoShape,
    build_preset,
    caption_bias,
    init_random,
    load_stdit3,
    save_checkpoint,
)
from edgetrim.export.reducers import tdtm
from edgetrim.export.stages import stdit3 as stages
from edgetrim.export.targets import onnx as onnx_target

LATENT = (2, 4, 4, 8, 8)  # [B (CFG), C, T, H, W] -> 4x4 tokens per frame
SHAPE = VideoShape(2, 4, 8, 8)


# ---------------------------------------------------------------------------------- references from the method


def ref_merge(x: torch.Tensor) -> torch.Tensor:
    """[N, T, C]: frame i of the output is the mean of input frames 2i and 2i+1."""
    return torch.stack([(x[:, 2 * i] + x[:, 2 * i + 1]) / 2 for i in range(x.shape[1] // 2)], dim=1)


def ref_unmerge(x: torch.Tensor) -> torch.Tensor:
    """[N, T/2, C]: output frames 2i and 2i+1 are both merged frame i."""
    frames = []
    for i in range(x.shape[1]):
        frames += [x[:, i], x[:, i]]
    return torch.stack(frames, dim=1)


def frame_major_to_pairs(x: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, T*S, C] -> [B*S, T, C] (a temporal sequence per spatial position)."""
    b, n, c = x.shape
    return x.reshape(b, frames, n // frames, c).transpose(1, 2).reshape(-1, frames, c)


def pairs_to_frame_major(x: torch.Tensor, batch: int) -> torch.Tensor:
    bs, t, c = x.shape
    return x.reshape(batch, bs // batch, t, c).transpose(1, 2).reshape(batch, -1, c)


def ref_tdtm_block(block, x, y, t_mlp, bias, frames, rope):
    """A STDiT3 block with TDTM as the paper describes it, merging per spatial position with Python loops."""
    b, _, c = x.shape

    def around(fn, h):  # merge frame pairs, run the sub-layer at T/2, repeat each frame twice
        merged = pairs_to_frame_major(ref_merge(frame_major_to_pairs(h, frames)), b)
        return pairs_to_frame_major(ref_unmerge(frame_major_to_pairs(fn(merged), frames // 2)), b)

    mods = block.scale_shift_table[None] + t_mlp.reshape(b, 6, c)
    shift, scale, gate, shift2, scale2, gate2 = (mods[:, i : i + 1] for i in range(6))
    x_m = block.norm1(x) * (1 + scale) + shift
    x = x + gate * around(lambda h: block.self_attention(h, frames // 2, rope), x_m)
    x = x + around(lambda h: block.cross_attn(h, y, bias), x)
    return x + gate2 * block.mlp(block.norm2(x) * (1 + scale2) + shift2)


@pytest.fixture(scope="module")
def model() -> STDiT3:
    return build_preset("stdit3-tiny")


@pytest.fixture(scope="module")
def inputs(model):
    gen = torch.Generator().manual_seed(3)
    c = model.config
    latent = torch.randn(*LATENT, generator=gen)
    caption = torch.randn(2, c.model_max_length, c.caption_channels, generator=gen)
    mask = torch.ones(2, c.model_max_length)
    mask[:, 6:] = 0
    return latent, torch.tensor([900.0, 900.0]), caption, mask


@pytest.fixture(scope="module")
def example(model):
    return stages.depth_example(model, SHAPE)


# ---------------------------------------------------------------------------------- reducer


def test_reducer_matches_loop_reference():
    x = torch.randn(6, 8, 5)
    assert (tdtm.merge_pairs(x) - ref_merge(x)).abs().max() <= 1e-5
    m = torch.randn(6, 4, 5)
    assert torch.equal(tdtm.unmerge_pairs(m), ref_unmerge(m))
    # frame-major layout [B, T*S, C] around spatial attention / cross-attention: the same operation
    xf = torch.randn(2, 8 * 3, 5)
    merged = tdtm.merge_frames(xf, 8)
    assert (merged - pairs_to_frame_major(ref_merge(frame_major_to_pairs(xf, 8)), 2)).abs().max() <= 1e-5
    back = tdtm.unmerge_frames(merged, 4)
    assert torch.equal(back, pairs_to_frame_major(ref_unmerge(frame_major_to_pairs(merged, 4)), 2))
    # a per-query caption mask halves with the queries: a merged query keeps a token both sources keep
    mask = (torch.rand(2, 8 * 3, 4) > 0.3).float()
    halved = tdtm.merge_query_mask(mask, 8)
    assert halved.shape == (2, 4 * 3, 4)
    ref = frame_major_to_pairs(mask, 8)
    ref = torch.stack([torch.minimum(ref[:, 2 * i], ref[:, 2 * i + 1]) for i in range(4)], 1)
    assert torch.equal(halved, pairs_to_frame_major(ref, 2))


@pytest.mark.parametrize("frames", [0, 3, 5])
def test_odd_frames_refused(frames):
    with pytest.raises(ValueError, match="must be even"):
        tdtm.merge_frames(torch.zeros(1, max(frames, 1) * 4, 2), frames)


# ---------------------------------------------------------------------------------- model


def test_tdtm_block_matches_method_reference(model, example):
    hidden, t_mlp, caption, mask = example
    bias = caption_bias(mask)
    frames = SHAPE.frames
    with torch.no_grad():
        for block, rope in ((model.spatial_blocks[0], None), (model.temporal_blocks[1], model.rope)):
            got = block(hidden, caption, t_mlp, bias, frames, True, rope)
            want = ref_tdtm_block(block, hidden, caption, t_mlp, bias, frames, rope)
            assert (got - want).abs().max() <= 1e-5


def test_model_runs_plain_and_tdtm(model, inputs):
    with torch.no_grad():
        plain = model(*inputs)
        merged = model(*inputs, merge=True)
    assert plain.shape == merged.shape == (2, 8, 4, 8, 8)  # pred_sigma: 2 x C_in channels
    assert torch.isfinite(plain).all() and torch.isfinite(merged).all()
    assert (plain - merged).abs().max() > 1e-3
    with pytest.raises(ValueError, match="even"):
        model(inputs[0][:, :, :3], *inputs[1:], merge=True)


def test_stages_chain_to_model(model, inputs):
    from edgetrim.export.stages.stdit3 import EmbedStage, FinalStage

    latent, timestep, caption, mask = inputs
    with torch.no_grad():
        hidden, t, t_mlp = EmbedStage(model, SHAPE)(latent, timestep)
        y = model.y_embedder(caption)
        for step in range(model.config.depth):
            hidden = stages.depth_stages(model, step, SHAPE.frames)["tdtm"](hidden, t_mlp, y, mask)
        out = FinalStage(model, SHAPE)(hidden, t)
        assert (out - model(*inputs, merge=True)).abs().max() <= 1e-5


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2)])
def test_patchify_matches_conv3d_and_unpatchify_inverts(patch):
    """The <= 6-D reshapes (XNNPACK's limit) == Conv3d over the padded latent; unpatchify == einops' rearrange."""
    c = STDiT3Config(depth=1, hidden_size=32, num_heads=2, caption_channels=16, model_max_length=6, patch_size=patch)
    model = init_random(STDiT3(c))
    x = torch.randn(2, 4, 4, 7, 9)  # H, W not multiples of the patch: padded
    with torch.no_grad():
        ref = model.x_embedder.proj(torch.nn.functional.pad(x, (0, 1, 0, 1, 0, 0))).flatten(2).transpose(1, 2)
        assert (model.x_embedder(x) - ref).abs().max() <= 1e-5
    shape = VideoShape(2, 4, 7, 9)
    nt, nh, nw = shape.tokens(patch)
    pt, ph, pw = patch
    tokens = torch.randn(2, nt * nh * nw, pt * ph * pw * c.out_channels)
    # "B (N_t N_h N_w) (T_p H_p W_p C_out) -> B C_out (N_t T_p) (N_h H_p) (N_w W_p)", then cropped
    want = tokens.reshape(2, nt, nh, nw, pt, ph, pw, c.out_channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    want = want.reshape(2, c.out_channels, nt * pt, nh * ph, nw * pw)[:, :, :4, :7, :9]
    assert torch.equal(model.unpatchify(tokens, shape), want)


def published_layout(c: STDiT3Config) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of Open-Sora 1.2's STDiT3 state dict (opensora/models/stdit/stdit3.py)."""
    d, hd, cc = c.hidden_size, c.hidden_size // c.num_heads, c.caption_channels
    mlp, out = int(d * c.mlp_ratio), math.prod(c.patch_size) * c.in_channels * 2

    def linear(name, o, i):
        return {f"{name}.weight": (o, i), f"{name}.bias": (o,)}

    layout = {"rope.freqs": (hd // 2,), "x_embedder.proj.weight": (d, c.in_channels, *c.patch_size)}
    layout["x_embedder.proj.bias"] = (d,)
    for emb in ("t_embedder", "fps_embedder"):
        layout |= linear(f"{emb}.mlp.0", d, 256) | linear(f"{emb}.mlp.2", d, d)
    layout |= linear("t_block.1", 6 * d, d) | {"y_embedder.y_embedding": (c.model_max_length, cc)}
    layout |= linear("y_embedder.y_proj.fc1", d, cc) | linear("y_embedder.y_proj.fc2", d, d)
    for kind in ("spatial_blocks", "temporal_blocks"):
        for i in range(c.depth):
            p = f"{kind}.{i}"
            layout |= {
                f"{p}.scale_shift_table": (6, d),
                f"{p}.attn.q_norm.weight": (hd,),
                f"{p}.attn.k_norm.weight": (hd,),
            }
            layout |= linear(f"{p}.attn.qkv", 3 * d, d) | linear(f"{p}.attn.proj", d, d)
            layout |= linear(f"{p}.cross_attn.q_linear", d, d) | linear(f"{p}.cross_attn.kv_linear", 2 * d, d)
            layout |= (
                linear(f"{p}.cross_attn.proj", d, d) | linear(f"{p}.mlp.fc1", mlp, d) | linear(f"{p}.mlp.fc2", d, mlp)
            )
    layout |= {"final_layer.scale_shift_table": (2, d)} | linear("final_layer.linear", out, d)
    return layout


def test_published_checkpoint_loads_by_path(tmp_path, model, inputs):
    from safetensors.torch import load_file, save_file

    c = model.config
    gen = torch.Generator().manual_seed(7)
    state = {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in published_layout(c).items()}
    state["rope.freqs"] = 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16)
    folder = tmp_path / "OpenSora-STDiT-v3-random"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    config = {"architectures": ["STDiT3"], "model_type": "STDiT3", "depth": 2, "hidden_size": 64, "num_heads": 4}
    config |= {"caption_channels": 32, "model_max_length": 8, "patch_size": [1, 2, 2], "in_channels": 4}
    config |= {"qk_norm": True, "pred_sigma": True, "enable_flash_attn": False, "input_sq_size": 512}
    (folder / "config.json").write_text(json.dumps(config))

    loaded, source = load_stdit3(str(folder))
    assert source.kind == "folder" and not source.random_weights
    assert set(loaded.state_dict()) == set(state)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        out = loaded(*inputs)
    assert torch.isfinite(out).all()

    # the preset written back in the published layout reloads to the very same outputs
    saved = save_checkpoint(model, tmp_path / "tiny-ckpt")
    assert set(load_file(str(saved / "model.safetensors"))) == set(published_layout(c))
    again, _ = load_stdit3(str(saved))
    with torch.no_grad():
        assert torch.equal(again(*inputs, merge=True), model(*inputs, merge=True))


# ---------------------------------------------------------------------------------- artifacts


def reference(model, example) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {v: s(*example).numpy() for v, s in stages.depth_stages(model, 1, SHAPE.frames).items()}


def test_onnx_two_graphs_share_one_data_file(tmp_path, model, example):
    import onnx
    import onnxruntime as ort

    def write(m, step, ex, stem):
        written = onnx_target.write(stages.depth_stages(m, step, SHAPE.frames), ex, tmp_path, stem)
        return written, sum(p.stat().st_size for p, _ in written.files)

    result, result_bytes = write(model, 1, example, "depth_01")
    want = reference(model, example)
    names = stages.depth_stages(model, 1, SHAPE.frames)["plain"].input_names
    for variant in stages.FUNCTIONS:
        path = tmp_path / result.functions[variant]["file"]
        graph = onnx.load(str(path), load_external_data=False).graph
        locations = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
        assert locations == {"depth_01.onnx.data"}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: x.numpy() for n, x in zip(names, example, strict=True)})[0]
        assert np.abs(got - want[variant]).max() <= 1e-4
    assert np.abs(want["plain"] - want["tdtm"]).max() > 1e-3

    # size: the tiny preset's 0.5 MB of weights leave the ~25 KB graphs at 5%; a wider block shows the sharing
    wide = init_random(
        STDiT3(STDiT3Config(depth=1, hidden_size=128, num_heads=4, caption_channels=32, model_max_length=8))
    )
    wide_example = stages.depth_example(wide, SHAPE)
    _, both = write(wide, 0, wide_example, "wide")
    one_variant = onnx_target.function_bytes(tmp_path / "wide.plain.onnx")
    assert one_variant > (tmp_path / "wide.onnx.data").stat().st_size  # every weight is referenced by each graph
    assert both <= 1.05 * one_variant, (both, one_variant)
    assert result_bytes < 1.1 * onnx_target.function_bytes(tmp_path / "depth_01.plain.onnx")
