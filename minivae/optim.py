"""Optimizers that update one flat parameter vector in place.

Both act on ``params.flat`` with ``grads.flat`` (see :mod:`minivae.params`),
keep their state in arrays of the parameters' dtype, and expose
``state_dict()`` / ``load_state_dict()`` made of plain arrays and numbers so a
checkpoint can hold them without pickle.
"""

from __future__ import annotations

import math

import numpy as np


def _check_pair(params: np.ndarray, grad: np.ndarray) -> None:
    if params.shape != grad.shape:
        raise ValueError(f"gradient shape {grad.shape} does not match parameters {params.shape}")
    if params.dtype != grad.dtype:
        raise TypeError(f"gradient dtype {grad.dtype} does not match parameters {params.dtype}")


class SGD:
    r"""Stochastic gradient descent with (heavy-ball) momentum.

    .. math::  v \leftarrow \mu v + g,\qquad \theta \leftarrow \theta - \eta v

    With ``momentum=0`` this is plain :math:`\theta \leftarrow \theta - \eta g`
    (the same convention as ``torch.optim.SGD`` without dampening).
    """

    def __init__(self, lr: float = 1e-2, momentum: float = 0.0):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (0.0 <= momentum < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.velocity: np.ndarray | None = None
        self.step_count = 0

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad`` (both flat)."""
        _check_pair(params, grad)
        if self.momentum:
            if self.velocity is None:
                self.velocity = np.zeros_like(params)
            self.velocity *= self.momentum
            self.velocity += grad
            params -= self.lr * self.velocity
        else:
            params -= self.lr * grad
        self.step_count += 1

    def state_dict(self) -> dict:
        state = {"step_count": np.int64(self.step_count)}
        if self.velocity is not None:
            state["velocity"] = self.velocity.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.velocity = np.array(state["velocity"]) if "velocity" in state else None


class Adam:
    r"""Adam (Kingma & Ba 2015) with bias correction by the step count t.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,

        \theta \leftarrow \theta - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}

    t counts optimizer steps (1 on the first update), never epochs.
    """

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not (0.0 <= b < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        if not (eps > 0):
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.lr, self.beta1, self.beta2 = float(lr), float(beta1), float(beta2)
        self.eps = float(eps)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.step_count = 0
        self._buf: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad`` (both flat)."""
        _check_pair(params, grad)
        if self.m is None:
            self.m = np.zeros_like(params)
            self.v = np.zeros_like(params)
        if self._buf is None or self._buf.shape != params.shape or self._buf.dtype != params.dtype:
            self._buf = np.empty_like(params)
        self.step_count += 1
        t = self.step_count
        b1, b2 = self.beta1, self.beta2
        m, v, buf = self.m, self.v, self._buf
        # m <- b1 m + (1 - b1) g ; v <- b2 v + (1 - b2) g^2, all in place: no temporary
        # arrays (a fresh parameter-sized temporary costs page faults on every step)
        m *= b1
        np.multiply(grad, 1 - b1, out=buf)
        m += buf
        v *= b2
        np.multiply(grad, grad, out=buf)
        buf *= 1 - b2
        v += buf
        # step = lr * m_hat / (sqrt(v_hat) + eps), with the bias corrections folded into scalars
        np.sqrt(v, out=buf)
        # math.sqrt, not np.sqrt: a NumPy float64 scalar would turn this float32 product
        # into a float64 loop with casts (7x slower, measured)
        buf *= 1.0 / math.sqrt(1 - b2**t)
        buf += self.eps
        np.divide(m, buf, out=buf)
        buf *= self.lr / (1 - b1**t)
        params -= buf

    def state_dict(self) -> dict:
        state = {"step_count": np.int64(self.step_count)}
        if self.m is not None:
            state["m"] = self.m.copy()
            state["v"] = self.v.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        if "m" in state:
            self.m = np.array(state["m"])
            self.v = np.array(state["v"])
        else:
            self.m = self.v = None


def make_optimizer(name: str, lr: float, **kwargs):
    """Build ``"adam"`` or ``"sgd"`` by name."""
    if name == "adam":
        return Adam(lr=lr, **kwargs)
    if name == "sgd":
        return SGD(lr=lr, **kwargs)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
