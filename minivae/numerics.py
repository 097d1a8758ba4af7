"""Small numerical building blocks: stable softplus, sigmoid and log-sum-exp, and row sums.

Everything else in minivae computes with these, so each is written once, here,
with the reason it is stable (and, where a faster form was chosen, what it saves).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray

#: log(2 pi), the constant of every Gaussian log-density (nats)
LOG_2PI = float(np.log(2.0 * np.pi))


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


def sum_last_axis(a):
    """Sum over the last axis: the same number as ``np.sum(a, axis=-1)``.

    Written as ``np.einsum("...i->...", a)`` only for speed: for the
    C-contiguous (K, B, D) arrays of a VAE NumPy's einsum is several times
    faster than ``np.sum(..., axis=-1)`` (see ``scripts/bench.py``).
    """
    return np.einsum("...i->...", a)


def softplus(x: Array) -> Array:
    r"""Stable :math:`\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})`.

    Never overflows (the exponent is always <= 0) and keeps full relative
    precision for very negative ``x`` through ``log1p``.

    For speed, :math:`\max(x, 0)` is computed as :math:`(x + |x|)/2`, which
    is exact in floating point (2x and x/2 are exact; x + |x| is 0 for x <= 0)
    and reuses :math:`|x|`: ``np.maximum`` costs as much as ``np.exp`` here
    (measured, 784k float32). Two inputs no finite network produces are
    off: x = -inf gives NaN, and x above half the largest float (1.7e38 in
    float32) gives inf because x + |x| overflows. Intermediates are reused in
    place (``out=``).
    """
    a = np.abs(x, dtype=np.result_type(x, 0.0))  # |x|, as floats even for integer x
    t = np.exp(-a)  # e^{-|x|}, in (0, 1]
    if isinstance(t, np.ndarray):
        np.log1p(t, out=t)
        a += x  # x + |x| = 2 max(x, 0)
        a *= 0.5
        t += a
        return t
    return 0.5 * (x + a) + np.log1p(t)  # a scalar: same formula, nothing to reuse


def sigmoid(x: Array) -> Array:
    r"""Logistic function :math:`\sigma(x) = 1 / (1 + e^{-x})`, accurate everywhere.

    The direct formula is already stable: its relative error is a few ulp
    for every x. For very negative x (below about -88 in float32, -709 in
    float64), :math:`e^{-x}` overflows to inf and :math:`1/(1+\infty) = 0`,
    which is the correctly rounded value up to the subnormal range, so the
    overflow warning is silenced rather than avoided. (This is also about ten
    times faster than selecting between :math:`1/(1+e^{-|x|})` and
    :math:`e^{-|x|}/(1+e^{-|x|})` with ``np.where``.)
    """
    with np.errstate(over="ignore"):
        e = np.exp(-x)
    e += 1  # in place for arrays, as below
    return np.reciprocal(e, out=e if isinstance(e, np.ndarray) else None)
