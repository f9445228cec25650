"""Language-model and whole-VLM presets, and an offline byte-level tokenizer, for tests and presets.

The weights are seeded random: any text they generate is meaningless; they exist to check that
exported graphs reproduce transformers exactly. The tokenizer is a byte-level BPE trained on a
few built-in sentences (no hub access), so every string round-trips through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from edgetrim.export.presets import PRESETS, Preset

IMAGE_TOKEN = "<image>"
SEED_LLM = 3  # seed of the VLM presets' language-model weights
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


CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{prompt}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class VlmPreset:
    """A LLaVA-style VLM: vision tower + projector (``vision.projector_hidden`` = the LLM width) and a causal LM."""

    vision: Preset
    text_config: Callable[[], object]
    weight_std: float  # std of the random LLM weights
    description: str
    template: str = CHATML


VLM_PRESETS: dict[str, VlmPreset] = {
    "tiny-vlm": VlmPreset(
        replace(PRESETS["tiny-llava-next"], projector_hidden=64),
        partial(tiny_qwen2_config, max_len=1024),
        0.2,
        "test-sized LLaVA-NeXT: tiny CLIP (2x2 grid at 64) + projector + 2-layer Qwen2-shaped LM",
    ),
    "llava-next-small": VlmPreset(
        replace(PRESETS["clip-vit-b16"], projector_hidden=896),
        qwen2_05b_config,
        0.02,
        "CLIP ViT-B/16 at 224 (2x2 grid + full view) + 2-layer MLP projector + Qwen2-0.5B-shaped LM",
    ),
    "llava-onevision-0.5b": VlmPreset(
        replace(PRESETS["siglip-so400m-384"], projector_hidden=896),
        qwen2_05b_config,
        0.02,
        "LLaVA-OneVision-0.5B shape: SigLIP so400m/14 at 384 + projector + Qwen2-0.5B-shaped LM",
    ),
}
