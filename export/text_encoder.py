"""``edgetrim export --model t5-tiny|<T5 folder>``: a T5 encoder chunked per block (``text-encoder`` artifact).

Chunks: ``embed`` (token embedding + the additive attention bias: T5's relative position bias,
computed once at export for the static length L, plus the padding mask), ``block_XX`` (one T5 block:
RMS-norm self-attention without scaling, RMS-norm feed-forward), ``final`` (final RMS norm). The
caption embeddings ``[1, L, D]`` go to a video denoiser whose ``caption_channels`` is D.

I/O: ``input_ids`` int64 [1, L], ``attention_mask`` float32 [1, L] (1 token, 0 pad) -> ``caption_embeds``
float32 [1, L, D]; between chunks ``hidden_XX`` [1, L, D] and ``attn_bias`` [1, H, L, L].

Tokenizer: the folder's ``tokenizer.json`` (``tokenizers`` library) when present; presets and folders
without one get a word-level tokenizer built offline (lowercased words of a fixed list, ``</s>``
appended): with random weights the text has no effect worth reading.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgetrim.export.artifact import check_out_dir, file_entry, staging, write_json
from edgetrim.export.pipeline import SUFFIX, TARGETS, VERSION, ChunkExport, io_spec, precision_for, write_chunk
from edgetrim.export.validate import Validation, ValidationFailed
from edgetrim.runtime.errors import UserError
from edgetrim.runtime.manifest import MANIFEST, SCHEMA_VERSION, read_manifest

TOKENIZER = "tokenizer.json"
PRESETS = {  # name -> (T5Config kwargs, default caption length)
    "t5-tiny": (
        {
            "vocab_size": 256,
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_heads": 4,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 32,
        },
        8,
    ),
}
WORDS = (
    "a an the of in on at with and to from by over under near through into is are two three small large "
    "red blue green white black golden cat dog bird fish horse person people car boat city street forest "
    "river ocean mountain sky sun moon snow rain night day morning walking running flying swimming dancing "
    "slowly quickly camera view close up aerial shot video scene light shadow water tree flower house road"
).split()


def is_t5(spec: str | None) -> bool:
    """A T5 preset name or a folder whose config.json has model_type t5."""
    if spec is None:
        return False
    if spec in PRESETS:
        return True
    config = Path(spec).expanduser() / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == "t5"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):  # not ours: the vision loader reports it
        return False


def load_t5(spec: str, seed: int = 0):
    """-> (T5EncoderModel in eval mode, source dict, folder or None)."""
    from transformers import T5Config, T5EncoderModel

    if spec in PRESETS:
        torch.manual_seed(seed)
        model = T5EncoderModel(T5Config(**PRESETS[spec][0])).eval()
        return model, {"kind": "preset", "name": spec, "random_weights": True}, None
    folder = Path(spec).expanduser()
    try:
        model = T5EncoderModel.from_pretrained(str(folder)).eval()
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder} does not load as a T5 encoder ({exc}): pass a save_pretrained folder") from None
    return model.float(), {"kind": "folder", "name": str(folder.resolve()), "random_weights": False}, folder


def offline_tokenizer():
    """Word-level tokenizer over ``WORDS`` (<pad> 0, </s> 1, <unk> 2), lowercased, ``</s>`` appended."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok


class EmbedStage(nn.Module):
    """input_ids [1, L], attention_mask [1, L] -> hidden_00 [1, L, D], attn_bias [1, H, L, L]."""

    def __init__(self, model, length: int) -> None:
        super().__init__()
        self.embed = model.encoder.embed_tokens
        attention = model.encoder.block[0].layer[0].SelfAttention
        with torch.no_grad():
            self.register_buffer("position_bias", attention.compute_bias(length, length).float(), persistent=False)
        self.input_names, self.output_names = ["input_ids", "attention_mask"], ["hidden_00", "attn_bias"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pad = (1.0 - attention_mask)[:, None, None, :] * torch.finfo(torch.float32).min
        return self.embed(input_ids), self.position_bias + pad


class BlockStage(nn.Module):
    """hidden_i [1, L, D], attn_bias [1, H, L, L] -> hidden_{i+1}: T5 self-attention (unscaled) + feed-forward."""

    def __init__(self, model, index: int) -> None:
        super().__init__()
        block = model.encoder.block[index]
        self.attn_norm, self.attn = block.layer[0].layer_norm, block.layer[0].SelfAttention
        self.ff_norm, self.ff = block.layer[1].layer_norm, block.layer[1].DenseReluDense
        self.heads, self.d_kv = self.attn.n_heads, self.attn.key_value_proj_dim
        self.input_names, self.output_names = [f"hidden_{index:02d}", "attn_bias"], [f"hidden_{index + 1:02d}"]

    def forward(self, hidden: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden.shape
        x = self.attn_norm(hidden)
        q, k, v = (
            p(x).reshape(b, n, self.heads, self.d_kv).transpose(1, 2) for p in (self.attn.q, self.attn.k, self.attn.v)
        )
        weights = (q @ k.transpose(-1, -2) + attn_bias).softmax(-1)
        hidden = hidden + self.attn.o((weights @ v).transpose(1, 2).reshape(b, n, self.heads * self.d_kv))
        return hidden + self.ff(self.ff_norm(hidden))


class FinalStage(nn.Module):
    def __init__(self, model, layers: int) -> None:
        super().__init__()
        self.norm = model.encoder.final_layer_norm
        self.input_names, self.output_names = [f"hidden_{layers:02d}"], ["caption_embeds"]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)


@dataclass
class TextExportOptions:
    target: str
    model: str
    length: int | None = None
    out: Path | None = None
    atol: float = 1e-4
    validate: bool = True


def example_ids(tokenizer, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sample caption tokenized and padded to L (ids clipped to the model's vocabulary)."""
    ids = tokenizer.encode("a small red boat on the river at night, aerial shot").ids[:length]
    padded = torch.zeros(1, length, dtype=torch.int64)
    padded[0, : len(ids)] = torch.tensor(ids).clamp(max=vocab - 1)
    mask = torch.zeros(1, length)
    mask[0, : len(ids)] = 1.0
    return padded, mask


def export_text_encoder(opts: TextExportOptions, step=lambda name: None) -> dict:
    """Export, validate (the chunked runtime vs transformers' T5EncoderModel) and write the artifact."""
    if opts.target not in TARGETS:
        raise UserError(f"--target {opts.target!r} is unknown: choose one of {', '.join(TARGETS)}")
    precision = precision_for(opts.target, None)
    if opts.out:
        check_out_dir(Path(opts.out))
    t0 = time.perf_counter()
    step("load model")
    model, source, folder = load_t5(opts.model)
    length = opts.length or (PRESETS[opts.model][1] if opts.model in PRESETS else 300)
    if length < 1:
        raise UserError(f"--caption-length {length} must be positive: e.g. 300 (Open-Sora 1.2)")
    from tokenizers import Tokenizer

    has_tokenizer = folder is not None and (folder / TOKENIZER).is_file()
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER)) if has_tokenizer else offline_tokenizer()
    config = model.config
    ids, mask = example_ids(tokenizer, length, config.vocab_size)
    stages = [EmbedStage(model, length), *(BlockStage(model, i) for i in range(config.num_layers))]
    stages.append(FinalStage(model, config.num_layers))
    out = Path(opts.out) if opts.out else Path("artifacts") / f"{Path(source['name']).name}-text-{opts.target}"
    env: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    with staging(out) as tmp:
        entries = []
        for i, stage in enumerate(stages):
            stage.eval()
            name = ["embed", *(f"block_{j:02d}" for j in range(config.num_layers)), "final"][i]
            step(f"export {opts.target} chunk {i + 1}/{len(stages)}: {name}")
            chunk = ChunkExport(name, stage, tuple(env[n] for n in stage.input_names))
            files = write_chunk(opts.target, chunk, tmp / f"{i:02d}-{name}{SUFFIX[opts.target]}", False, True)
            inputs, outputs = io_spec(chunk, opts.target)
            entry = {"name": name, "files": [file_entry(tmp, f, role) for f, role in files]}
            entry.update(inputs=inputs, outputs=outputs)
            if opts.target == "onnx":
                entry["optimized"] = "ort-extended"
            entries.append(entry)
            with torch.no_grad():
                result = stage(*chunk.example)
            env.update(zip(stage.output_names, result if isinstance(result, tuple) else (result,), strict=True))
        if has_tokenizer:
            shutil.copy(folder / TOKENIZER, tmp / TOKENIZER)
        else:
            tokenizer.save(str(tmp / TOKENIZER))
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgetrim_version": VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kind": "text-encoder",
            "target": opts.target,
            "precision": precision,
            "source": {
                **source,
                "architecture": "T5EncoderModel",
                "config": config.to_dict(),
                "has_projector": False,
                "token_dim": config.d_model,
            },
            "text_encoder": {
                "architecture": "T5EncoderModel",
                "max_length": length,
                "hidden_size": config.d_model,
                "vocab_size": config.vocab_size,
                "tokenizer": "tokenizer",
                "tokenizer_origin": "the model folder" if has_tokenizer else "built offline (word-level, no meaning)",
            },
            "chunks": entries,
            "pipelines": {"text_encoder": [e["name"] for e in entries]},
            "files": [file_entry(tmp, tmp / TOKENIZER, "tokenizer")],
        }
        write_json(tmp / MANIFEST, manifest)
        step("validate")
        validation = (
            validate_text(tmp, model, ids, mask, opts.atol) if opts.validate and opts.target != "coreml" else None
        )
        report = {
            "artifact": str(out),
            "kind": "text-encoder",
            "target": opts.target,
            "model": source["name"],
            "random_weights": source["random_weights"],
            "chunks": [{"name": e["name"], "bytes": sum(f["bytes"] for f in e["files"])} for e in entries],
            "max_length": length,
            "validation": validation.to_dict() if validation else {"status": "skipped"},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        write_json(tmp / "report.json", report)
    return report


def validate_text(root: Path, model, ids: torch.Tensor, mask: torch.Tensor, atol: float) -> Validation:
    """The staged chunks through the runtime vs transformers' T5EncoderModel, every position."""
    from edgetrim.runtime.chunks import ChunkLoader

    with ChunkLoader(read_manifest(root)) as loader:
        got = loader.run({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})["caption_embeds"]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.numpy()
    err = float(np.abs(got - want).max())
    if err > atol:
        raise ValidationFailed(f"text encoder differs from transformers: max abs error {err:.2e} (atol {atol:g})")
    return Validation("passed", err, atol, [{"case": "sample caption", "max_abs_error": err, "passed": True}])
