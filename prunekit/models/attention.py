"""``nn.MultiheadAttention`` after head or width pruning.

The stock module requires ``num_heads · head_dim == embed_dim`` and one width for the input, the heads and the
output. A pruned self-attention has fewer heads than its input width suggests, so structured pruning turns it into
:class:`SlicedMultiheadAttention`: the same parameters and state_dict keys (``in_proj_weight``, ``in_proj_bias``,
``out_proj``), the same call signature, with a forward that reads the widths from the parameters.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class SlicedMultiheadAttention(nn.MultiheadAttention):
    """Self-attention with ``num_heads`` heads of ``head_dim`` (any input and output width); see the module
    docstring. Built by the structured-pruning slicer from an ``nn.MultiheadAttention``, never directly."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, Any]:
        x = query if self.batch_first else query.transpose(0, 1)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        b, t, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(h * d, dim=-1)
        q, k, v = (z.reshape(b, t, h, d).transpose(1, 2) for z in (q, k, v))
        mask = _merged_mask(attn_mask, key_padding_mask, b, h, t, q.dtype)
        drop = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / d ** 0.5
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            weights = F.dropout(scores.softmax(-1), drop, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop,
                                                 is_causal=is_causal and mask is None)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, h * d))
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if weights is not None and unbatched:
            weights = weights.squeeze(0)
        return out, weights


def _merged_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, b: int, h: int, t: int,
                 dtype: torch.dtype) -> torch.Tensor | None:
    """One additive float mask ``(B, H, T, S)`` from ``nn.MultiheadAttention``'s two (bool: True = ignore)."""
    def additive(m: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(m, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)

    mask = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        mask = mask.view(1, 1, t, -1) if mask.dim() == 2 else mask.view(b, h, t, -1)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(b, 1, 1, -1)
        mask = pad if mask is None else mask + pad
    return mask
