r"""Checking gradients: is a hand-written backward pass right?

minivae's own gradients are checked this way (``tests/test_vae_gradients.py``,
``tests/test_estimators.py``), and so can yours: give :func:`check_grads` a function and
the gradient you wrote for it.

>>> import numpy as np
>>> from minivae.gradcheck import check_grads
>>> def f(w):            # any scalar function of a float64 array
...     return float(np.sum(np.log1p(np.exp(w)) * np.arange(1, 4)))
>>> def grad_f(w):       # its gradient, written by hand
...     return np.arange(1, 4) / (1 + np.exp(-w))
>>> result = check_grads(f, grad_f, np.array([0.5, -1.0, 2.0]))
>>> print(result)
gradient check passed: worst relative error 8.2e-12 along 10 random directions (tolerance 1e-06)
>>> assert result        # truthy when it passed: the same line works inside pytest

(The test suite runs this example, as it runs every ``>>>`` example in the package.)

How the check works
-------------------
* **Directional derivatives.** Along a random unit direction u (seeded), the hand-written
  gradient predicts :math:`g^\top u`; finite differences of f measure it. Random
  directions mix every entry of the gradient, so a wrong entry cannot hide, and the
  cost is a few evaluations of f per direction however many parameters there are
  (the idea of autograd's ``check_grads``).
* **A fourth-order stencil in float64.**
  :math:`[8(f(x+hu) - f(x-hu)) - (f(x+2hu) - f(x-2hu))]/(12h)` has truncation error
  :math:`O(h^4)`, so with h = 1e-4 both truncation and roundoff (about
  :math:`10^{-16}|f|/h`) stay near 1e-12 relative: a tolerance of **1e-6** leaves a wide
  margin for a right gradient and none for a wrong one (a factor of two gives an error
  of 1/3). float32 cannot do this, and :func:`check_grads` refuses it.
* **Relative error** :math:`|a - n| / \max(|a| + |n|, \text{floor})`, where the floor is
  the stencil's own roundoff, so a derivative that is zero is not compared with noise.
* **Kinks** (ReLU at 0) spoil finite differences on a segment that crosses them. Each
  estimate is made at h and h/2; if they disagree, the segment crossed a kink and a new
  direction is drawn with a smaller step (:func:`directional_check`).

The other tools here: :func:`numerical_gradient` computes every partial derivative
(after CS231n's ``gradient_check.py``; for small pieces such as a layer or a density,
scored by :func:`grad_error`), :func:`model_gradcheck` checks a whole
:class:`~minivae.vae.VAE` over all parameters and block by block, and
``python -m minivae gradcheck`` does that from the command line for a model you describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .checks import positive_int


def rel_error(a, b, floor: float = 1e-12) -> float:
    """Largest elementwise ``|a - b| / max(|a| + |b|, floor)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), floor)))


def grad_error(analytic, numeric, scale_floor: float = 1e-5) -> float:
    r"""Worst entrywise relative error of a gradient array, with a noise floor.

    .. math::  \max_i \frac{|a_i - n_i|}{\max(|a_i| + |n_i|,\ s \max_j (|a_j| + |n_j|))}

    Finite-difference roundoff is absolute (about :math:`10^{-13}|f|/h`), so an entry
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
    roundoff (about :math:`\epsilon|f|/h`) near 1e-12.
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
    floating-point roundoff, about :math:`\epsilon|f|/h`, stays near 1e-12 relative.
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


@dataclass
class GradCheck:
    """What :func:`check_grads` found; truthy when the gradient passed.

    ``worst_error`` is the largest relative error of the directional derivative over
    the ``n_directions`` random directions, ``rtol`` the tolerance it was held to.
    """

    passed: bool
    worst_error: float
    rtol: float
    n_directions: int

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"gradient check {verdict}: worst relative error {self.worst_error:.1e} along "
                f"{self.n_directions} random directions (tolerance {self.rtol:g})")

    __repr__ = __str__  # what pytest shows when ``assert check_grads(...)`` fails


def check_grads(f: Callable[[np.ndarray], float], grad: Callable[[np.ndarray], np.ndarray],
                x, *, rtol: float = 1e-6, n_directions: int = 10, seed: int = 0,
                h: float = 1e-4) -> GradCheck:
    r"""Check a hand-written gradient ``grad`` of the scalar function ``f`` at ``x``.

    Compares :math:`\nabla f(x)^\top u` (from ``grad``) with a fourth-order central
    difference of ``f`` along ``n_directions`` random unit directions u drawn from
    ``numpy.random.default_rng(seed)`` (see the module docstring for why this is
    tight). ``x`` is a float64 array of any shape (or something ``np.asarray`` turns
    into float64); ``grad(x)`` must return an array of that shape.

    Returns a :class:`GradCheck`, truthy when every relative error is at most ``rtol``.

    >>> import numpy as np
    >>> check_grads(lambda w: float(np.sum(w ** 3)), lambda w: 3 * w ** 2,
    ...             np.array([0.5, -1.0])).passed
    True
    >>> check_grads(lambda w: float(np.sum(w ** 3)), lambda w: 6 * w ** 2,
    ...             np.array([0.5, -1.0])).passed
    False
    """
    if isinstance(x, np.ndarray) and x.dtype != np.float64:
        raise TypeError(f"x must be float64 for finite differences to resolve 1e-6, got "
                        f"{x.dtype} (convert with x.astype(np.float64))")
    x = np.array(x, dtype=np.float64)  # a copy: the check perturbs it
    n_directions = positive_int(n_directions, "n_directions")
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive number, got {rtol!r}")
    shape = x.shape

    def loss_and_grad(flat):
        value = f(flat.reshape(shape))
        if np.ndim(value) != 0 or not np.isfinite(value):
            raise ValueError(f"f must return a finite scalar, got {value!r}")
        g = np.asarray(grad(flat.reshape(shape)), dtype=np.float64)
        if g.shape != shape:
            raise ValueError(f"grad must return an array of x's shape {shape}, got {g.shape}")
        return float(value), g.ravel()

    worst = directional_check(loss_and_grad, x.ravel(), np.random.default_rng(seed),
                              n_directions=n_directions, h=h, rtol=rtol)
    return GradCheck(worst <= rtol, worst, rtol, n_directions)

