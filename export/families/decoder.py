"""Decoder-only language models (Qwen2 / Llama / Mistral ``*ForCausalLM``, or the one inside a LLaVA
model): where their parts live, how a folder's weights load into them, and the family's presets.

Preset weights are seeded random: any text they generate is meaningless; they exist to check that
exported graphs reproduce transformers exactly. Their tokenizer is a byte-level BPE trained offline on
a few built-in sentences (no hub access), so every string round-trips through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from edgetrim.export.families.checkpoint import KeyMap, load_state, read_config, read_tensors
from edgetrim.export.families.vision import LLAVA_TYPES
from edgetrim.runtime.contract import IMAGE_TOKEN
from edgetrim.runtime.errors import UserError

SEED = 3  # seed of the presets' language-model weights
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]
SENTENCES = [
    "A photo of a cat sitting on a red sofa next to the window.",
    "Describe the image in one sentence.",
    "What is written on the sign in the picture?",
    "The quick brown fox jumps over the lazy dog.",
    "There are two people walking along the beach at sunset.",
    "How many cars are parked in front of the building?",
    "user\nassistant\nsystem\nYou are a helpful assistant.",
]
CAUSAL_LM_TYPES = ("qwen2", "llama", "mistral")
# checkpoint prefix -> name inside *ForCausalLM (first match wins)
LLAVA_KEYS: KeyMap = (
    ("model.language_model.", "model."),  # transformers >= 4.52 layout
    ("language_model.model.", "model."),  # older LLaVA layout
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
)
CAUSAL_LM_KEYS: KeyMap = (("model.", "model."), ("lm_head.", "lm_head."))
# text model_type -> the LLaVA chat template of that family
CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{prompt}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
TEMPLATES = {
    "qwen2": CHATML,
    "llama": "USER: <image>\n{prompt} ASSISTANT:",
    "mistral": "[INST] <image>\n{prompt} [/INST]",
}


def tiny_qwen2_config(vocab: int = 512, max_len: int = 64):
    """Qwen2-shaped: hidden 64, 2 layers, 4 heads, 2 kv heads (GQA), q/k/v biases, tied embeddings."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )


def tiny_llama_config(vocab: int = 512, max_len: int = 64):
    """Llama-shaped: hidden 64, 2 layers, 4 heads, 1 kv head, no biases, untied lm_head."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=max_len,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def random_causal_lm(config, seed: int = 0, std: float = 0.2) -> nn.Module:
    """A ``*ForCausalLM`` from ``config`` with seeded normal weights (std large enough for distinct logits)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(std * torch.randn(param.shape, generator=generator))
    return model.eval()


def build_byte_tokenizer(folder: Path, vocab: int = 512) -> Path:
    """Train a byte-level BPE (at most ``vocab`` ids, specials first) on ``SENTENCES``; write tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def qwen2_05b_config():
    """Qwen2-0.5B's shape: hidden 896, 24 layers, 14 heads, 2 kv heads, intermediate 4864, vocab 151936, tied."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder with embed_tokens/layers/norm/rotary_emb, lm_head) of a *ForCausalLM or a Llava* model."""
    inner = getattr(model, "model", None)
    decoder = getattr(inner, "language_model", inner)
    lm_head = getattr(model, "lm_head", None)
    if (
        decoder is None
        or lm_head is None
        or not all(hasattr(decoder, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb"))
    ):
        raise UserError(
            f"{type(model).__name__} is not a Llama / Mistral / Qwen2 causal LM or a LLaVA model holding one: "
            "pass such a checkpoint"
        )
    return decoder, lm_head


def load_causal_lm(folder: Path) -> nn.Module:
    """The ``*ForCausalLM`` of a folder saved with save_pretrained: a causal LM, or a LLaVA model's language model
    (only its tensors are read; the vision tower and projector are skipped)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    llava = read_config(folder).get("model_type") in LLAVA_TYPES
    config = AutoConfig.from_pretrained(folder)
    text_config = config.text_config if llava else config
    keymap = LLAVA_KEYS if llava else CAUSAL_LM_KEYS
    state = read_tensors(folder, keymap)
    # a stored lm_head is its own matrix (LLaVA wrappers untie it even when text_config says tied)
    text_config.tie_word_embeddings = "lm_head.weight" not in state
    model = AutoModelForCausalLM.from_config(text_config)
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:  # tied embeddings
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    load_state(model, state, "language model", folder)
    return model.eval()


@dataclass(frozen=True)
class DecoderPreset:
    """A language model's shape (a transformers config factory) and the std of its seeded random weights."""

    config: Callable[[], object]
    weight_std: float
    description: str


PRESETS: dict[str, DecoderPreset] = {
    "tiny-qwen2": DecoderPreset(
        partial(tiny_qwen2_config, max_len=1024), 0.2, "test Qwen2-shaped LM: hidden 64, 2 layers, GQA 4/2"
    ),
    "qwen2-0.5b": DecoderPreset(qwen2_05b_config, 0.02, "Qwen2-0.5B shape: hidden 896, 24 layers, vocab 151936"),
}


def build_preset(name: str) -> nn.Module:
    p = PRESETS[name]
    return random_causal_lm(p.config(), seed=SEED, std=p.weight_std)


def eos_ids(tokenizer, config) -> list[int]:
    """Stop ids: the config's eos_token_id(s), else the ChatML / GPT-style end tokens the tokenizer has."""
    eos = config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    ids = [int(i) for i in ids if i is not None]
    if ids:
        return ids
    found = (tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
    return [i for i in found if i is not None]
