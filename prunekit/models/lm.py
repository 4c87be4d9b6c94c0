"""A small decoder-only transformer language model (byte-level by default), for calibrated-pruning experiments.

``byte_lm(vocab_size=256, dim=128, layers=4, heads=4, mlp_ratio=4, max_len=256)``: token embedding + learned
positions, ``layers`` pre-LayerNorm blocks (causal self-attention with separate ``q/k/v/o`` Linear projections,
GELU MLP ``fc1/fc2``), final LayerNorm and an untied ``lm_head``. ``forward(ids [B, T]) -> logits [B, T, vocab]``.
The blocks are ``model.blocks`` (an ``nn.ModuleList``), which the calibrated methods find by themselves.

It is not a zoo model (the zoo's models take images: ``create_model`` and the zoo-wide tests feed them ``(C, H,
W)`` inputs); build it as a factory: ``prunekit.build_model("prunekit.models.lm:byte_lm", {"dim": 128})`` or
``--model prunekit.models.lm:byte_lm --model-kwargs '{"dim": 128}'`` on the command line.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import check_number


class Attention(nn.Module):
    """Causal multi-head self-attention with separate q/k/v/o projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ByteLM(nn.Module):
    """Decoder-only transformer LM: ``forward(ids) -> logits``."""

    def __init__(self, vocab_size: int = 256, dim: int = 128, layers: int = 4, heads: int = 4, mlp_ratio: int = 4,
                 max_len: int = 256) -> None:
        super().__init__()
        for name, v, low in (("vocab_size", vocab_size, 2), ("dim", dim, 1), ("layers", layers, 1),
                             ("heads", heads, 1), ("mlp_ratio", mlp_ratio, 1), ("max_len", max_len, 1)):
            check_number(name, v, low=low, high=1 << 20, integer=True)
        if dim % heads:
            check_number("dim / heads", dim / heads, integer=True)
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio * dim) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[-1]
        if t > self.max_len:
            check_number("sequence length", t, high=self.max_len)
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def byte_lm(vocab_size: int = 256, dim: int = 128, layers: int = 4, heads: int = 4, mlp_ratio: int = 4,
            max_len: int = 256) -> ByteLM:
    """Factory of :class:`ByteLM` (``--model prunekit.models.lm:byte_lm``)."""
    return ByteLM(vocab_size=vocab_size, dim=dim, layers=layers, heads=heads, mlp_ratio=mlp_ratio, max_len=max_len)
