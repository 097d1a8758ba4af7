"""Small numerical helpers shared by the objectives, the exact models and the checks."""

from __future__ import annotations

import numpy as np


def logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    r"""Stable :math:`\log\sum_i e^{a_i} = m + \log\sum_i e^{a_i - m}`, m = max_i a_i.

    Rows whose maximum is -inf give -inf (not NaN).
    """
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def logmeanexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    r""":math:`\log \frac1n\sum_i e^{a_i}` over ``axis`` (n = a.shape[axis]), computed stably."""
    return logsumexp(a, axis=axis) - np.log(a.shape[axis])
