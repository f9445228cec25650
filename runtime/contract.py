"""The contract between exporter, runtime and apps: every name an artifact uses, defined once.

Plain constants and naming rules only (no torch, no I/O), so that the Swift and Java apps can mirror
them one for one; ``python -m edgetrim.runtime.contract`` prints them as JSON.

Artifact kinds and their pipelines (chunk names in run order):

- ``vision-encoder``: ``vision`` (pixel_values -> tokens, positions, partition_budgets)
- ``vlm``: ``vision``, ``prefill``, ``decode``; top-level files ``embedding``, ``tokenizer``
- ``language-model``: ``prefill``, ``decode``; top-level file ``embedding`` (``tokenizer`` when known)
- ``video-denoiser``: ``caption``, ``denoiser`` (depth chunks hold functions ``plain`` and ``tdtm``);
  top-level file ``null_caption``
- ``text-encoder``: ``text_encoder``; top-level file ``tokenizer``
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"

# ------------------------------------------------------------------------------------------- kinds, targets
VISION_ENCODER, VLM, LANGUAGE_MODEL, VIDEO_DENOISER, TEXT_ENCODER = (
    "vision-encoder",
    "vlm",
    "language-model",
    "video-denoiser",
    "text-encoder",
)
KINDS = (VISION_ENCODER, VLM, LANGUAGE_MODEL, VIDEO_DENOISER, TEXT_ENCODER)
ONNX, COREML, EXECUTORCH = "onnx", "coreml", "executorch"
TARGETS = (ONNX, COREML, EXECUTORCH)
PROGRAM_SUFFIX = {ONNX: ".onnx", EXECUTORCH: ".pte", COREML: ".mlpackage"}
ORT_EXTENDED = "ort-extended"  # chunk["optimized"] (artifacts before 0.3): saved CPU-optimized; read, not written
# chunk["quantization"]: how a chunk's weights are stored (absent: float). "dynamic": activations are
# quantized to int8 at run time too (ONNX Runtime dynamic MatMuls / MatMulNBits accuracy 4, XNNPACK).
INT8_DYNAMIC = "int8-dynamic"  # int8 weights per output channel, int8 activations per run
INT4_DYNAMIC = "int4-dynamic"  # int4 weights in blocks of 32 along the input, int8 activations per run
INT8_WEIGHT = "int8-weight"  # weight-only int8 per output channel, float compute (Core ML, iOS 17)
INT4_WEIGHT = "int4-weight"  # weight-only int4 in blocks of 32, float compute (Core ML, iOS 18)
QUANTIZATIONS = (INT8_DYNAMIC, INT4_DYNAMIC, INT8_WEIGHT, INT4_WEIGHT)

# ------------------------------------------------------------------------------------------- pipelines
VISION, PREFILL, DECODE, CAPTION, DENOISER, TEXT = "vision", "prefill", "decode", "caption", "denoiser", "text_encoder"
DEFAULT_PIPELINE = "main"  # the one pipeline of a manifest that names none (all chunks in order)

# ------------------------------------------------------------------------------------------- file roles
PROGRAM = "program"  # the chunk's program (first function of a multi-function ONNX chunk)
EXTERNAL_DATA = "external_data"  # ONNX weights beside the graph(s)
EMBEDDING = "embedding"  # token-embedding table [V, D], .npy
TOKENIZER = "tokenizer"  # tokenizer.json (Hugging Face tokenizers)
TOKENIZER_CONFIG = "tokenizer_config"
SPECIAL_TOKENS_MAP = "special_tokens_map"
NULL_CAPTION = "null_caption"  # [L, C_cap] caption embedding for classifier-free guidance, .npy
TOKENIZER_FILES = {"tokenizer.json": TOKENIZER, "tokenizer_config.json": TOKENIZER_CONFIG}
TOKENIZER_FILES["special_tokens_map.json"] = SPECIAL_TOKENS_MAP
DATA_FILES = {EMBEDDING: "embed_tokens.npy", NULL_CAPTION: "null_caption.npy"}


def program_role(function: str, first: bool) -> str:
    """Role of the file holding one function of an ONNX chunk (one graph per file)."""
    return PROGRAM if first else f"{PROGRAM}_{function}"


# ------------------------------------------------------------------------------------------- functions
PLAIN, TDTM = "plain", "tdtm"  # depth-chunk functions of a video denoiser
DEFAULT_METHOD = "forward"  # the method of a single-function ExecuTorch program / CoreML model


def method_name(function: str) -> str:
    """ExecuTorch method / CoreML function holding ``function`` of a multi-function chunk."""
    return f"{DEFAULT_METHOD}_{function}"


# ------------------------------------------------------------------------------------------- tensors
# vision (HiRED): [1, P, 3, S, S] -> [1, K, D], [1, K] flat p*N + row*n + col ascending, [1, P] summing to K
PIXEL_VALUES, TOKENS, POSITIONS, PARTITION_BUDGETS = "pixel_values", "tokens", "positions", "partition_budgets"
EARLY_SCORES, SELECT_SCORES = "early_scores", "select_scores"  # [B*P, N] between vision chunks
# language model: inputs_embeds [1, P or 1, D], last_index int [1], position int [1] -> logits [1, V]
INPUTS_EMBEDS, LAST_INDEX, POSITION, LOGITS = "inputs_embeds", "last_index", "position", "logits"
KV = ("key", "value")
# video denoiser: latent [B, C, T, H, W], timestep [B], caption [B, L, C], caption_mask [B, L] -> velocity
LATENT, TIMESTEP, CAPTION_EMBEDS, CAPTION_MASK, VELOCITY = (
    "latent",
    "timestep",
    "caption_embeds",
    "caption_mask",
    "velocity",
)
CAPTION_TOKENS, TIME, TIME_MLP = "caption", "t", "t_mlp"  # between video chunks
# text encoder: input_ids int [1, L], attention_mask float [1, L] -> caption_embeds [1, L, D]
INPUT_IDS, ATTENTION_MASK, ATTENTION_BIAS = "input_ids", "attention_mask", "attn_bias"


def hidden_name(index: int) -> str:
    """The hidden state entering layer / block / depth step ``index`` (between chunks)."""
    return f"hidden_{index:02d}"


def past_names(layer: int) -> list[str]:
    """Decode inputs: the KV cache of ``layer``, [1, KV, L, hd] each."""
    return [f"past_{kind}_{layer:02d}" for kind in KV]


def present_names(layer: int) -> list[str]:
    """Prefill / decode outputs: the updated KV cache of ``layer``."""
    return [f"present_{kind}_{layer:02d}" for kind in KV]


# ------------------------------------------------------------------------------------------- prompts
IMAGE_TOKEN = "<image>"  # where a vlm's K visual tokens go in the prompt template
PROMPT_FIELD = "{prompt}"  # where the user's text goes


def as_json() -> dict:
    """Every constant and an example of every naming rule, for the apps' conformance tests."""
    values = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, str | int | tuple | dict)}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    values["rules"] = {
        "hidden_name(3)": hidden_name(3),
        "past_names(1)": past_names(1),
        "present_names(1)": present_names(1),
        "method_name('tdtm')": method_name(TDTM),
        "program_role('tdtm', false)": program_role(TDTM, False),
    }
    return values


if __name__ == "__main__":
    print(json.dumps(as_json(), indent=2, sort_keys=True))
