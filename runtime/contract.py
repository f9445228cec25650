"""The contract between exporter, runtime and apps: every name an artifact uses, defined once.

Plain constants and naming rules only (no torch, no I/O), so that the Swift and Java apps can mirror
them one for one; ``python -m edgetrim.runtime.contract`` prints them as JSON.

Artifact kinds and their pipelines (chunk names in run order):

- ``vision-encoder``: ``vision`` (pixel_values -> tokens, positions, partition_budgets)
- ``vlm``: ``vision``, ``prefill``, ``decode``; top-level files ``embedding``, ``tokenizer``
  (``embedding_scales`` when the table is int8)
- ``language-model``: ``prefill``, ``decode``; top-level file ``embedding`` (``tokenizer`` when known,
  ``embedding_scales`` when the table is int8)
- ``video-denoiser``: ``caption``, ``denoiser`` (depth chunks hold functions ``plain`` and ``tdtm``);
  top-level file ``null_caption``
- ``text-encoder``: ``text_encoder``; top-level file ``tokenizer``
- ``video-decoder``: ``temporal`` (per micro-frame chunk of latent frames; its chunks hold a function
  ``latents_<k>`` per chunk length, e.g. ``latents_5`` and a shorter last ``latents_2``, over the same
  weights), ``spatial`` (per micro-batch of frames)
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"

# ------------------------------------------------------------------------------------------- kinds, targets
VISION_ENCODER, VLM, LANGUAGE_MODEL, VIDEO_DENOISER, TEXT_ENCODER, VIDEO_DECODER = (
    "vision-encoder",
    "vlm",
    "language-model",
    "video-denoiser",
    "text-encoder",
    "video-decoder",
)
KINDS = (VISION_ENCODER, VLM, LANGUAGE_MODEL, VIDEO_DENOISER, TEXT_ENCODER, VIDEO_DECODER)
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
TEMPORAL, SPATIAL = "temporal", "spatial"  # video decoder
DEFAULT_PIPELINE = "main"  # the one pipeline of a manifest that names none (all chunks in order)

# ------------------------------------------------------------------------------------------- file roles
PROGRAM = "program"  # the chunk's program (first function of a multi-function ONNX chunk)
EXTERNAL_DATA = "external_data"  # ONNX weights beside the graph(s)
EMBEDDING = "embedding"  # token-embedding table [V, D], .npy (float32, float16 or int8: ``llm.embedding_dtype``)
EMBEDDING_SCALES = "embedding_scales"  # [V] float32 of an int8 table, .npy: row i is embedding[i] * scales[i]
TOKENIZER = "tokenizer"  # tokenizer.json (Hugging Face tokenizers)
TOKENIZER_CONFIG = "tokenizer_config"
SPECIAL_TOKENS_MAP = "special_tokens_map"
NULL_CAPTION = "null_caption"  # [L, C_cap] caption embedding for classifier-free guidance, .npy
TOKENIZER_FILES = {"tokenizer.json": TOKENIZER, "tokenizer_config.json": TOKENIZER_CONFIG}
TOKENIZER_FILES["special_tokens_map.json"] = SPECIAL_TOKENS_MAP
DATA_FILES = {EMBEDDING: "embed_tokens.npy", EMBEDDING_SCALES: "embed_scales.npy", NULL_CAPTION: "null_caption.npy"}
# llm["embedding_dtype"]: the table as stored; int8 is symmetric per row (scale max|row| / 127, 1 for a zero row)
EMBEDDING_FLOAT32, EMBEDDING_FLOAT16, EMBEDDING_INT8 = "float32", "float16", "int8"
# int8_block (quantized ONNX exports of a model whose LM head is tied to the table): the head chunk's
# MatMulNBits weight, read by its graphs from these same files (llm["embedding_tied"] names that chunk):
# q + EMBEDDING_ZERO_POINT as uint8 [V, D], scales [V, D / block] float32 (one per block of D), row i block j
# is (values[i, j*block:(j+1)*block] - EMBEDDING_ZERO_POINT) * scales[i, j]
EMBEDDING_INT8_BLOCK = "int8_block"
EMBEDDING_ZERO_POINT = 128


def program_role(function: str, first: bool) -> str:
    """Role of the file holding one function of an ONNX chunk (one graph per file)."""
    return PROGRAM if first else f"{PROGRAM}_{function}"


# ------------------------------------------------------------------------------------------- functions
PLAIN, TDTM = "plain", "tdtm"  # depth-chunk functions of a video denoiser
DEFAULT_METHOD = "forward"  # the method of a single-function ExecuTorch program / CoreML model


def prefill_function(length: int) -> str:
    """Function of a language-model chunk that prefills ``length`` positions (one per prefill length;
    beside it the chunk holds ``decode``, over the same weights)."""
    return f"{PREFILL}_{length}"


def temporal_function(latent_frames: int) -> str:
    """Function of a video-decoder temporal chunk that decodes a micro-frame chunk of ``latent_frames`` latent
    frames (one per chunk length: the full one, e.g. ``latents_5``, and a shorter last one, over the same weights)."""
    return f"latents_{latent_frames}"


def method_name(function: str) -> str:
    """ExecuTorch method / CoreML function holding ``function`` of a multi-function chunk."""
    return f"{DEFAULT_METHOD}_{function}"


# ------------------------------------------------------------------------------------------- tensors
# vision (HiRED): [1, P, 3, S, S] -> [1, K, D], [1, K] flat p*N + row*n + col ascending, [1, P] summing to K
PIXEL_VALUES, TOKENS, POSITIONS, PARTITION_BUDGETS = "pixel_values", "tokens", "positions", "partition_budgets"
EARLY_SCORES, SELECT_SCORES = "early_scores", "select_scores"  # [B*P, N] between vision chunks
# language model: inputs_embeds [1, P or 1, D], last_index int [1], position int [1] -> logits [1, V]
INPUTS_EMBEDS, LAST_INDEX, POSITION, LOGITS = "inputs_embeds", "last_index", "position", "logits"
KV_STATE, KV_IO = "state", "io"  # a Core ML language model's KV cache: model state (iOS 18) or inputs/outputs
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
# video decoder, frames in (B T) order: latent_chunk [B*k, C, h, w] (k latent frames of a micro-frame chunk)
# -> frame_latents [B*f, C, h, w] (f video frames); frame_batch [N, C, h, w] -> frames [N, 3, 8h, 8w] (about [-1, 1])
LATENT_CHUNK, FRAME_LATENTS, FRAME_BATCH, FRAMES = "latent_chunk", "frame_latents", "frame_batch", "frames"


def hidden_name(index: int) -> str:
    """The hidden state entering layer / block / depth step ``index`` (between chunks)."""
    return f"hidden_{index:02d}"


def temporal_name(index: int) -> str:
    """Video decoder: the frames entering temporal stage ``index + 1`` (0: the temporal head's output)."""
    return f"temporal_{index:02d}"


def spatial_name(index: int) -> str:
    """Video decoder: the frames entering spatial up block ``index`` (0: the spatial head's output)."""
    return f"spatial_{index:02d}"


def past_names(layer: int) -> list[str]:
    """Decode inputs: the KV cache of ``layer``, [1, KV, L, hd] each."""
    return [f"past_{kind}_{layer:02d}" for kind in KV]


def present_names(layer: int) -> list[str]:
    """Prefill / decode outputs: the updated KV cache of ``layer``."""
    return [f"present_{kind}_{layer:02d}" for kind in KV]


def cache_names(layer: int) -> list[str]:
    """Core ML states of a stateful language-model chunk: the KV cache of ``layer``, [1, KV, L, hd] each,
    written by prefill and updated in place by decode (no past / present tensors cross the call)."""
    return [f"{kind}_cache_{layer:02d}" for kind in KV]


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
        "cache_names(1)": cache_names(1),
        "method_name('tdtm')": method_name(TDTM),
        "prefill_function(96)": prefill_function(96),
        "temporal_function(2)": temporal_function(2),
        "program_role('tdtm', false)": program_role(TDTM, False),
        "temporal_name(3)": temporal_name(3),
        "spatial_name(3)": spatial_name(3),
    }
    return values


if __name__ == "__main__":
    print(json.dumps(as_json(), indent=2, sort_keys=True))
