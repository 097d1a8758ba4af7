"""Finite-difference gradient checking (fourth-order central differences, float64).

Two tools, after CS231n's ``gradient_check.py`` and autograd's ``check_grads``:

* :func:`numerical_gradient` - every partial derivative of a scalar function,
  for the small pieces (layers, densities, KL), scored by :func:`grad_error`;
* :func:`directional_check` (and :func:`model_gradcheck` on a whole model) -
  the analytic gradient against a difference along random directions, with a
  guard against ReLU kinks.

Errors are relative, :math:`|a - n| / \\max(|a| + |n|, \\text{floor})`, where the
floor is what finite differences can resolve: a small fraction of the gradient's
scale (:func:`grad_error`) or the stencil's own roundoff (:func:`directional_check`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .checks import positive_int


def rel_error(a, b, floor: float = 1e-12) -> float:
    """Largest elementwise ``|a - b| / max(|a| + |b|, floor)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor)))


def grad_error(analytic, numeric, scale_floor: float = 1e-5) -> float:
    r"""Worst entrywise relative error of a gradient array, with a noise floor.

    .. math::  \max_i \frac{|a_i - n_i|}{\max(|a_i| + |n_i|,\ s \max_j (|a_j| + |n_j|))}

    Finite-difference roundoff is absolute (about 1e-13 |f| / h), so an entry
    many orders of magnitude below the largest cannot be matched to 1e-6
    *relative to itself*; it is compared relative to ``s`` (1e-5) times the
    gradient's scale instead. A factor-of-two error in any entry larger than
    about 1e-11 of the largest still gives an error far above 1e-6.
    """
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    size = np.abs(a) + np.abs(n)
    scale = float(np.max(size)) if size.size else 0.0
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(size, scale_floor * scale)))


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    r"""Fourth-order central-difference gradient of the scalar ``f()`` with respect to ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored exactly;
    ``f`` reads it. Entry i is

    .. math::  \frac{8[f(x + h e_i) - f(x - h e_i)] - [f(x + 2h e_i) - f(x - 2h e_i)]}{12h}

    whose truncation error is O(h^4), so h = 1e-3 keeps both truncation and
    roundoff (about eps |f| / h) near 1e-12.
    """
    if x.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        values = []
        for step in (h, -h, 2 * h, -2 * h):
            x[i] = old + step
            values.append(f())
        x[i] = old
        grad[i] = (8 * (values[0] - values[1]) - (values[2] - values[3])) / (12 * h)
    return grad


def numerical_gradient_array(
    f: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-3
) -> np.ndarray:
    """Gradient of ``sum(f() * dout)`` wrt ``x``: the product a backward pass computes."""
    return numerical_gradient(lambda: float(np.sum(f() * dout)), x, h)


def directional_derivative(f: Callable[[np.ndarray], float], x0: np.ndarray, u: np.ndarray,
                           h: float) -> float:
    r"""Fourth-order central difference of f along u:

    .. math::  \frac{8[f(x+hu) - f(x-hu)] - [f(x+2hu) - f(x-2hu)]}{12h},

    with truncation error O(h^4), so h can be large enough (1e-4) that
    floating-point roundoff, about eps*|f|/h, stays near 1e-12 relative.
    """
    d1 = f(x0 + h * u) - f(x0 - h * u)
    d2 = f(x0 + 2 * h * u) - f(x0 - 2 * h * u)
    return (8 * d1 - d2) / (12 * h)


def directional_check(
    loss_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    rng: np.random.Generator,
    n_directions: int = 3,
    h: float = 1e-4,
    mask: np.ndarray | None = None,
    smooth_tol: float = 1e-7,
    max_redraws: int = 4,
    rtol: float = 1e-6,
) -> float:
    """Worst relative error between the analytic and numerical directional derivative.

    For unit random directions u (nonzero only where ``mask`` is True, if
    given), compares :math:`g(x_0)^\top u` with :func:`directional_derivative`.
    ``loss_and_grad(x)`` returns ``(f(x), grad f(x))`` for a flat float64 x.

    Finite differences are only meaningful where f is smooth along the segment
    [x0 - 2hu, x0 + 2hu]; a ReLU kink inside it spoils them. So each estimate is
    made at h and at h/2: if the two disagree by more than ``smooth_tol``
    (relative), the segment crossed a kink and a new direction is drawn with a
    step four times smaller (at most ``max_redraws`` times; the last direction is
    used whatever its smoothness, and its analytic-vs-numerical error is scored
    like any other, so a kink that is never avoided shows up as a large error,
    never as a pass). A wrong analytic gradient cannot pass this way: the two
    numerical estimates agree with each other on smooth segments, not with it.
    """
    if x0.dtype != np.float64:
        raise TypeError(f"finite differences need float64, got {x0.dtype}")
    # zero directions would check nothing and report an error of 0: a check that cannot fail
    n_directions = positive_int(n_directions, "n_directions")
    f0, grad = loss_and_grad(x0)

    def f(x):
        return loss_and_grad(x)[0]

    worst = 0.0
    for _ in range(n_directions):
        for attempt in range(max_redraws + 1):
            u = rng.standard_normal(x0.shape)
            if mask is not None:
                u[~mask] = 0.0
            u /= np.linalg.norm(u)
            step = h / 4**attempt  # a kink at distance d is avoided once 2 * step < d
            numeric = directional_derivative(f, x0, u, step)
            numeric_half = directional_derivative(f, x0, u, step / 2)
            if rel_error(numeric, numeric_half) <= smooth_tol or attempt == max_redraws:
                break
        # Roundoff of the stencil is about eps |f| / step in absolute terms; differences below
        # it carry no information, so they are scored against it (like an atol) rather than
        # against a derivative that may itself be smaller than the noise.
        noise = 64 * np.finfo(np.float64).eps * (abs(f0) + 1.0) / step
        worst = max(worst, rel_error(grad @ u, numeric, floor=noise / rtol))
    return worst


def model_gradcheck(model, x, eps, *, rng: np.random.Generator, n_directions: int = 3,
                    h: float = 1e-4, objective=None, **loss_kwargs) -> dict[str, float]:
    """Check a model's whole gradient, and each parameter block on its own.

    ``objective(model, x, eps, **loss_kwargs) -> (loss, grads)`` defaults to
    ``model.loss_and_grad``. Returns ``{"all": err, name: err, ...}``: the worst
    relative error of the directional derivative along random directions over
    all parameters, then along random directions confined to each named block
    (so a wrong block cannot hide behind a right one). The model's parameters
    are restored afterwards.
    """
    if model.dtype != np.float64:
        raise TypeError(f"gradcheck needs a float64 model, got {model.dtype}")
    n_directions = positive_int(n_directions, "n_directions")  # 0 would check nothing
    if objective is None:
        def objective(m, x_, eps_, **kw):
            return m.loss_and_grad(x_, eps_, **kw)
    original = model.get_flat()

    def f(flat):
        model.set_flat(flat)
        loss, grads = objective(model, x, eps, **loss_kwargs)
        return loss, grads.flat.copy()

    try:
        results = {"all": directional_check(f, original, rng, n_directions, h)}
        for name, sl in model.params.slices().items():
            mask = np.zeros(original.shape, dtype=bool)
            mask[sl] = True
            results[name] = directional_check(f, original, rng, n_directions, h, mask=mask)
    finally:
        model.set_flat(original)
    return results
