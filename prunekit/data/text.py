"""Text for language models: read files, tokenise, cut calibration samples and a held-out stream.

Tokenisation uses the model's tokenizer when one is on disk (``transformers.AutoTokenizer.from_pretrained(folder,
local_files_only=True)``: nothing is downloaded), else bytes (UTF-8, vocabulary 256). Calibration samples are
``n`` windows of ``seq_len`` tokens at seeded random offsets of the calibration stream (as Wanda/SparseGPT sample
C4); the held-out stream is kept apart so that perplexity is never measured on calibration text.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import PrunekitError, check_number

log = logging.getLogger(__name__)

MAX_TEXT_BYTES = 1 << 30
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def read_text_bytes(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> bytes:
    """The bytes of one file or several (joined by a newline); a missing file is a PrunekitError."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise PrunekitError("no text file given")
    parts = []
    size = 0
    for p in items:
        path = Path(p)
        if not path.is_file():
            raise PrunekitError(f"text file {str(path)!r} does not exist or is not a file")
        size += path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise PrunekitError(f"text files larger than {MAX_TEXT_BYTES >> 20} MiB in all are not read")
        parts.append(path.read_bytes())
    return b"\n".join(parts)


def load_tokenizer(folder: str | os.PathLike | None) -> Any | None:
    """The tokenizer saved in ``folder`` (local files only), or None when there is none."""
    if folder is None:
        return None
    path = Path(folder)
    if not path.is_dir() or not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        log.warning("a tokenizer is in %s but transformers is not installed: using bytes", path)
        return None
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def encode(data: bytes, tokenizer: Any | None = None) -> torch.Tensor:
    """Token ids (1-D int64) of ``data``: the tokenizer's, or the bytes themselves."""
    if tokenizer is None:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    ids = tokenizer(data.decode("utf-8", errors="replace"), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def split_stream(tokens: torch.Tensor, heldout: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(calibration part, held-out tail)``: the last ``heldout`` fraction of the stream is held out."""
    check_number("heldout", heldout, low=0.0, high=1.0, high_open=True)
    cut = tokens.numel() - int(round(tokens.numel() * heldout))
    return tokens[:cut], tokens[cut:]


def calibration_samples(tokens: torch.Tensor, n: int, seq_len: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` windows ``[1, seq_len]`` at random offsets of ``tokens`` (seeded, reproducible)."""
    n = int(check_number("calibration samples", n, low=1, integer=True))
    seq_len = int(check_number("seq_len", seq_len, low=1, integer=True))
    if tokens.numel() < seq_len:
        raise PrunekitError(f"the calibration text has {tokens.numel()} tokens, fewer than one sample of {seq_len}")
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, tokens.numel() - seq_len + 1, (n,), generator=gen)
    return [tokens[s:s + seq_len].unsqueeze(0).clone() for s in starts.tolist()]
