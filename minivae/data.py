"""Datasets. For now: a small built-in synthetic binary dataset that needs no files."""

from __future__ import annotations

import numpy as np


def synthetic_bars(n: int, rng: np.random.Generator, side: int = 8, p_bar: float = 0.2,
                   flip: float = 0.02) -> np.ndarray:
    """Binary side x side images made of random horizontal and vertical bars.

    Each of the 2*side bars is on with probability ``p_bar``; each pixel is then
    flipped with probability ``flip``. Returns float64 0/1 data of shape
    (n, side*side): a dataset with clear latent structure (which bars are on)
    for a quick training run.
    """
    rows = rng.random((n, side)) < p_bar
    cols = rng.random((n, side)) < p_bar
    img = rows[:, :, None] | cols[:, None, :]
    img ^= rng.random(img.shape) < flip
    return img.reshape(n, side * side).astype(np.float64)
