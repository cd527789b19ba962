"""What a prior's held-out score is set against: the code frequencies alone."""

from __future__ import annotations

import math

import numpy as np


def unigram_nll(train_tokens: np.ndarray, val_tokens: np.ndarray, codebook_size: int) -> float:
    """NLL (nats per token) of ``val_tokens`` under Laplace-smoothed code frequencies of ``train_tokens``."""
    counts = np.bincount(np.asarray(train_tokens).ravel(), minlength=codebook_size).astype(np.float64)
    log_p = np.log(counts + 1.0) - np.log(counts.sum() + codebook_size)
    val = np.asarray(val_tokens).ravel()
    return float(-log_p[val].mean()) if val.size else math.nan
