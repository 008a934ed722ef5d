"""Sentence embeddings from an encoder's hidden states, one rule for every user of frozen features."""

from __future__ import annotations

import numpy as np


def mean_pool(hidden, attention_mask) -> np.ndarray:
    """The last hidden states averaged over the real (unpadded) tokens of each row."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).detach().numpy()
