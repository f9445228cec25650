"""A T5 encoder chunked per block (the ``text-encoder`` artifact's stages).

Chunks: ``embed`` (token embedding + the additive attention bias: T5's relative position bias,
computed once at export for the static length L, plus the padding mask), ``block_XX`` (one T5 block:
RMS-norm self-attention without scaling, RMS-norm feed-forward), ``final`` (final RMS norm).

I/O: ``input_ids`` int64 [1, L], ``attention_mask`` float32 [1, L] (1 token, 0 pad) -> ``caption_embeds``
float32 [1, L, D]; between chunks ``hidden_XX`` [1, L, D] and ``attn_bias`` [1, H, L, L].
"""

from __future__ import annotations

import torch

from edgetrim.export.stages.base import Stage
from edgetrim.runtime import contract
from edgetrim.runtime.contract import hidden_name


class EmbedStage(Stage):
    """input_ids [1, L], attention_mask [1, L] -> hidden_00 [1, L, D], attn_bias [1, H, L, L]."""

    def __init__(self, model, length: int) -> None:
        super().__init__()
        self.embed = model.encoder.embed_tokens
        attention = model.encoder.block[0].layer[0].SelfAttention
        with torch.no_grad():
            self.register_buffer("position_bias", attention.compute_bias(length, length).float(), persistent=False)
        self.input_names = [contract.INPUT_IDS, contract.ATTENTION_MASK]
        self.output_names = [hidden_name(0), contract.ATTENTION_BIAS]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pad = (1.0 - attention_mask)[:, None, None, :] * torch.finfo(torch.float32).min
        return self.embed(input_ids), self.position_bias + pad


class BlockStage(Stage):
    """hidden_i [1, L, D], attn_bias [1, H, L, L] -> hidden_{i+1}: T5 self-attention (unscaled) + feed-forward."""

    def __init__(self, model, index: int) -> None:
        super().__init__()
        block = model.encoder.block[index]
        self.attn_norm, self.attn = block.layer[0].layer_norm, block.layer[0].SelfAttention
        self.ff_norm, self.ff = block.layer[1].layer_norm, block.layer[1].DenseReluDense
        self.heads, self.d_kv = self.attn.n_heads, self.attn.key_value_proj_dim
        self.input_names = [hidden_name(index), contract.ATTENTION_BIAS]
        self.output_names = [hidden_name(index + 1)]

    def forward(self, hidden: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = hidden.shape
        x = self.attn_norm(hidden)
        q, k, v = (
            p(x).reshape(b, n, self.heads, self.d_kv).transpose(1, 2) for p in (self.attn.q, self.attn.k, self.attn.v)
        )
        weights = (q @ k.transpose(-1, -2) + attn_bias).softmax(-1)
        hidden = hidden + self.attn.o((weights @ v).transpose(1, 2).reshape(b, n, self.heads * self.d_kv))
        return hidden + self.ff(self.ff_norm(hidden))


class FinalStage(Stage):
    def __init__(self, model, layers: int) -> None:
        super().__init__()
        self.norm = model.encoder.final_layer_norm
        self.input_names, self.output_names = [hidden_name(layers)], [contract.CAPTION_EMBEDS]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)


def example_ids(tokenizer, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sample caption tokenized and padded to L (ids clipped to the model's vocabulary)."""
    ids = tokenizer.encode("a small red boat on the river at night, aerial shot").ids[:length]
    padded = torch.zeros(1, length, dtype=torch.int64)
    padded[0, : len(ids)] = torch.tensor(ids).clamp(max=vocab - 1)
    mask = torch.zeros(1, length)
    mask[0, : len(ids)] = 1.0
    return padded, mask


def t5_stages(model, length: int) -> list[Stage]:
    """embed, one block stage per layer, final; their chunk names are ``chunk_names``."""
    layers = model.config.num_layers
    return [EmbedStage(model, length), *(BlockStage(model, i) for i in range(layers)), FinalStage(model, layers)]


def chunk_names(layers: int) -> list[str]:
    return ["embed", *(f"block_{i:02d}" for i in range(layers)), "final"]
