"""The ONNX lowering of ``edgetrim.export.stages.fused``: each custom op becomes one ONNX Runtime contrib op
(domain com.microsoft), passed to the torch.onnx dynamo exporter as its ``custom_translation_table``.

onnx itself knows no contrib op, so each gets its ``OpSchema`` here (the inputs and attributes used).
"""

from __future__ import annotations

import onnxscript
import torch
from onnx.defs import OpSchema

from edgetrim.export.stages import fused  # noqa: F401  (registers torch.ops.edgetrim.*)

DOMAIN = "com.microsoft"
MSFT = onnxscript.values.Opset(DOMAIN, 1)


def schema(name: str, inputs: list[str], outputs: list[str], attributes: dict[str, OpSchema.AttrType]) -> OpSchema:
    """A contrib op's schema: float tensors ``T`` (``M``: int32 for names in ``INT_INPUTS``); a name ending in
    ``?`` is optional."""

    def param(spec: str) -> OpSchema.FormalParameter:
        name = spec.rstrip("?")
        options = OpSchema.FormalParameterOption
        option = options.Optional if spec.endswith("?") else options.Single
        return OpSchema.FormalParameter(name, "M" if name in INT_INPUTS else "T", param_option=option)

    return OpSchema(
        name,
        DOMAIN,
        1,
        inputs=[param(s) for s in inputs],
        outputs=[param(s) for s in outputs],
        type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[OpSchema.Attribute(a, kind, "", required=False) for a, kind in attributes.items()],
    )


INT_INPUTS = ("seqlens_k", "total_sequence_length")
FLOAT, INT = OpSchema.AttrType.FLOAT, OpSchema.AttrType.INT
SKIP_RMS_NORM = onnxscript.values.Op(
    MSFT,
    "SkipSimplifiedLayerNormalization",
    schema(
        "SkipSimplifiedLayerNormalization",
        ["input", "skip", "gamma"],
        ["output", "mean?", "inv_std_var?", "input_skip_bias_sum?"],
        {"epsilon": FLOAT},
    ),
)
GQA = onnxscript.values.Op(
    MSFT,
    "GroupQueryAttention",
    schema(
        "GroupQueryAttention",
        [
            "query",
            "key?",
            "value?",
            "past_key",
            "past_value",
            "seqlens_k",
            "total_sequence_length",
            "cos_cache",
            "sin_cache",
        ],
        ["output", "present_key", "present_value"],
        {"num_heads": INT, "kv_num_heads": INT, "scale": FLOAT, "do_rotary": INT, "rotary_interleaved": INT},
    ),
)


def add_rms_norm(x, residual, weight, eps: float):
    normed, _, _, total = SKIP_RMS_NORM(x, residual, weight, epsilon=eps, _num_outputs=4)
    return normed, total


def gqa(qkv, past_key, past_value, seqlens_k, total, cos, sin, heads: int, kv_heads: int, scale: float):
    return GQA(
        qkv, None, None, past_key, past_value, seqlens_k, total, cos, sin,
        num_heads=heads, kv_num_heads=kv_heads, scale=scale, do_rotary=1, rotary_interleaved=0, _num_outputs=3,
    )  # fmt: skip


TRANSLATIONS = {torch.ops.edgetrim.add_rms_norm.default: add_rms_norm, torch.ops.edgetrim.gqa.default: gqa}
