"""T5 encoders (captions for the video denoiser): loading a ``T5EncoderModel`` folder, the family's
presets, and the offline word-level tokenizer the presets use.

A folder's own ``tokenizer.json`` is used when present; presets and folders without one get a
word-level tokenizer built offline (lowercased words of a fixed list, ``</s>`` appended): with random
weights the text has no effect worth reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgetrim.export.families.checkpoint import Source, resolve_folder
from edgetrim.runtime.errors import UserError

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
    """A preset name, a T5 folder or a hub id -> (T5EncoderModel in eval mode, Source, folder or None)."""
    from transformers import T5Config, T5EncoderModel

    if spec in PRESETS:
        torch.manual_seed(seed)
        model = T5EncoderModel(T5Config(**PRESETS[spec][0])).eval()
        return model, Source("preset", spec, "T5EncoderModel", True, model.config.to_dict()), None
    folder, kind = resolve_folder(spec)
    try:
        model = T5EncoderModel.from_pretrained(str(folder)).eval()
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder} does not load as a T5 encoder ({exc}): pass a save_pretrained folder") from None
    name = str(folder.resolve()) if kind == "folder" else spec
    return model.float(), Source(kind, name, "T5EncoderModel", False, model.config.to_dict()), folder


def load_tokenizer(folder: Path | None):
    """The folder's tokenizer.json (``tokenizers``), else the offline word-level one; and where it came from."""
    from tokenizers import Tokenizer

    if folder is not None and (folder / TOKENIZER).is_file():
        return Tokenizer.from_file(str(folder / TOKENIZER)), "the model folder"
    return offline_tokenizer(), "built offline (word-level, no meaning)"


def offline_tokenizer():
    """Word-level tokenizer over ``WORDS`` (<pad> 0, </s> 1, <unk> 2), lowercased, ``</s>`` appended."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok
