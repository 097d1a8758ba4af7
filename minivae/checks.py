"""Argument checks shared by the core, so each rule is written once.

Each raises the specific exception (ValueError for a bad value, TypeError for a
bad type) with a message that names the argument, what was expected and what was
given. Nothing here is an ``assert``: input checks must survive ``python -O``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

#: the floating-point types a model can be built in
DTYPES = ("float32", "float64")


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def choice(value: Any, choices: Iterable[str], name: str) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def float_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as ``np.dtype`` if it is float32 or float64, else a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.name not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def generator(rng: Any, name: str = "rng", *, allow_none: bool = False):
    """``rng`` if it is a ``numpy.random.Generator`` (or None, if allowed), else a TypeError.

    Randomness in minivae is always explicit: never NumPy's global state.
    """
    if isinstance(rng, np.random.Generator) or (allow_none and rng is None):
        return rng
    expected = "a numpy.random.Generator" + (" or None" if allow_none else "")
    raise TypeError(f"{name} must be {expected}, got {type(rng).__name__}")


def real_number(value: Any, name: str, *, above: float | None = None,
                at_least: float | None = None, below: float | None = None) -> float:
    """``value`` as a float if it is a finite real number in range, else an error naming it.

    The range is ``value > above``, ``value >= at_least`` and ``value < below``, each when
    given. A bool, a string, None or a complex number is a TypeError (``lr=True`` is a
    bug, not a learning rate of 1); NaN, an infinity or a value out of range is a
    ValueError.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isfinite(v) and (above is None or v > above) and \
            (at_least is None or v >= at_least) and (below is None or v < below):
        return v
    if at_least is not None and below is not None:
        wanted = f"in [{at_least:g}, {below:g})"
    elif above == 0 and below is None:
        wanted = "a positive number"
    else:
        bounds = [f"{op} {b:g}" for op, b in ((">", above), (">=", at_least), ("<", below))
                  if b is not None]
        wanted = "a number " + " and ".join(bounds) if bounds else "a finite number"
    raise ValueError(f"{name} must be {wanted}, got {value!r}"
                     + ("" if math.isfinite(v) else " (not finite)"))
