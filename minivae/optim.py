"""Optimizers that update one flat parameter vector in place.

All act on ``params.flat`` with ``grads.flat`` (see :mod:`minivae.params`),
keep their state in arrays of the parameters' dtype, and expose
``state_dict()`` / ``load_state_dict()`` made of plain arrays and numbers so a
checkpoint can hold them without pickle.

Every update is elementwise, so each optimizer runs it over the flat vector in
cache-sized pieces (:data:`CHUNK`): the same numbers, bit for bit, in less time.
"""

from __future__ import annotations

import math

import numpy as np

from .checks import choice, real_number
from .numerics import flush_subnormals
from .params import aligned_copy, aligned_empty, aligned_zeros

#: Elements per chunk of an elementwise optimizer update. The update makes about a dozen
#: passes over its arrays; done chunk by chunk, all of them stay in the core's cache
#: instead of streaming the whole vector from memory a dozen times (measured on the
#: 425,284 float32 parameters of Burda et al.'s model: 1.23 ms whole, 0.73 ms in chunks
#: of 32,768; 4,096 is slower again, from the per-call overhead). The result is
#: bit-identical: every operation is elementwise.
CHUNK = 32768

#: How far a pre-scaled average (:class:`_Average`) may exceed the true one before it is
#: renormalized. 2^8 leaves float32 moments of gradients up to 1e17 in range.
SCALE_LIMIT = 2.0**8


#: Every this many steps, BurdaAdam's moments that have decayed below the smallest normal
#: float are set to zero (see :func:`_flush_decayed_moments`).
FLUSH_EVERY = 100


def _chunks(n: int):
    """Slices of ``range(n)`` of at most :data:`CHUNK` elements."""
    chunk = CHUNK
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def _check_pair(params: np.ndarray, grad: np.ndarray) -> None:
    if params.shape != grad.shape:
        raise ValueError(f"gradient shape {grad.shape} does not match parameters {params.shape}")
    if params.dtype != grad.dtype:
        raise TypeError(f"gradient dtype {grad.dtype} does not match parameters {params.dtype}")


def _chunk_buffer(buf: np.ndarray | None, params: np.ndarray) -> np.ndarray:
    """A scratch array of one chunk (reused from ``buf`` when it fits)."""
    size = min(CHUNK, params.size)
    if buf is None or buf.dtype != params.dtype or buf.size < size:
        buf = aligned_empty(size, params.dtype)
    return buf


def _flush_decayed_moments(step_count: int, *moments: np.ndarray) -> None:
    """Every :data:`FLUSH_EVERY` steps, set moment entries below the smallest normal float to 0.

    (:class:`BurdaAdam` calls this; :class:`Adam`'s pre-scaled moments only decay when they
    are renormalized, and it flushes them then, for the same reasons.)

    Why: a parameter whose gradient has become exactly zero (a dead ReLU unit, the
    encoder's weights of a pixel that is 0 in every image) keeps its moments decaying
    geometrically until they enter the subnormal range, and there they stay: ``m * 0.9``
    rounds back to ``m`` a few units above zero, ``v * 0.999`` at about 500 units. Every
    later step then does arithmetic on subnormal numbers, which this CPU runs through a
    slow microcode path. Measured on real training states (one thread): a 784-400-20 ReLU
    model after 93 epochs of ``minivae train`` had 11% of m subnormal (its dead units), and
    an Adam step took 7.0 ms instead of 3.0 ms on the flushed state; Burda et al.'s model
    after 507 epochs of their optimizer has 4.6% of v at 7e-43 (always-off pixels): 2.05
    instead of 1.75 ms.

    Why it is harmless: an Adam step is lr_t m / (sqrt(v) / sqrt(1 - beta2^t) + eps). A
    subnormal v (below 1.2e-38 in float32) makes the first term of the denominator at most
    about 1e-19 * 32 = 3.4e-18, below half an ulp of Adam's eps = 1e-8 (4.4e-16;
    BurdaAdam's 1e-4 even more so), so the denominator is the same number, bit for bit,
    with v = 0; a subnormal m moves a parameter by at most lr_t * 1.2e-38 / eps, which
    leaves every parameter larger than about 1e-23 unchanged. Once flushed, an entry with
    zero gradient stays exactly 0 (0 * beta + 0). Doing it every 100 steps, not every
    step, makes its cost (three passes over m and v) vanish: 0.03 passes per step.
    """
    if step_count % FLUSH_EVERY == 0:
        for a in moments:
            flush_subnormals(a)


class SGD:
    r"""Stochastic gradient descent with (heavy-ball) momentum.

    .. math::  v \leftarrow \mu v + g,\qquad \theta \leftarrow \theta - \eta v

    With ``momentum=0`` this is plain :math:`\theta \leftarrow \theta - \eta g`
    (the same convention as ``torch.optim.SGD`` without dampening).
    """

    def __init__(self, lr: float = 1e-2, momentum: float = 0.0):
        self.lr = real_number(lr, "lr", above=0)
        self.momentum = real_number(momentum, "momentum", at_least=0, below=1)
        self.velocity: np.ndarray | None = None
        self.step_count = 0
        self._buf: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad`` (both flat)."""
        _check_pair(params, grad)
        if self.momentum and self.velocity is None:
            self.velocity = aligned_zeros(params.size, params.dtype)
        self._buf = _chunk_buffer(self._buf, params)
        for sl in _chunks(params.size):  # cache-sized pieces: see CHUNK
            buf = self._buf[:sl.stop - sl.start]
            step = grad[sl]
            if self.momentum:
                v = self.velocity[sl]
                v *= self.momentum  # v <- mu v + g
                v += step
                step = v
            np.multiply(step, self.lr, out=buf)  # theta <- theta - lr v
            params[sl] -= buf
        self.step_count += 1

    def state_dict(self) -> dict:
        state = {"step_count": np.int64(self.step_count)}
        if self.velocity is not None:
            state["velocity"] = self.velocity.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.velocity = (aligned_copy(np.asarray(state["velocity"])) if "velocity" in state
                         else None)


class _Average:
    r"""An exponential moving average :math:`a_t = \beta a_{t-1} + (1-\beta) u_t`, pre-scaled.

    The array ``stored`` holds :math:`a_t / \beta^{s}`, where s counts the steps since the
    last renormalization, so that a step only *adds* :math:`(1-\beta)\beta^{-s} u_t` to it
    instead of first multiplying the whole array by :math:`\beta`: one pass over the
    parameters fewer per average and step. The true average is ``scale * stored`` with
    ``scale`` :math:`= \beta^{s}`. When :math:`\beta^{-s}` would pass
    :data:`SCALE_LIMIT` (every 52 steps for beta = 0.9, 5,542 for 0.999, every step for
    beta = 0), the step multiplies by :math:`\beta^{s+1}` instead, bringing ``stored`` back to
    the true average (s = 0): so stored values never exceed the true ones by more than
    SCALE_LIMIT, and nothing overflows that would not overflow anyway.
    """

    def __init__(self, like: np.ndarray, beta: float):
        self.stored = aligned_zeros(like.size, like.dtype)
        self.beta = beta
        self.s = 0

    def coefficients(self) -> tuple[float | None, float]:
        """``(decay, gain)`` for this step's ``stored <- decay * stored + gain * u`` (decay
        None: no multiplication at all); advances s."""
        beta, s = self.beta, self.s + 1
        if beta > 0 and beta**-s <= SCALE_LIMIT:
            self.s = s
            return None, (1 - beta) * beta**-s
        self.s = 0
        return beta**s, 1 - beta  # beta^s = beta * (the scale before this step)

    @property
    def scale(self) -> float:
        """The true average is ``scale * stored``."""
        return self.beta**self.s


class Adam:
    r"""Adam (Kingma & Ba 2015) with bias correction by the step count t.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\qquad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,

        \theta \leftarrow \theta - \eta\,\frac{m / (1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}

    t counts optimizer steps (1 on the first update), never epochs.

    How it is computed (the same numbers up to roundoff; measured below): m and v are kept
    pre-scaled, :math:`m = \beta_1^{s_1} M` and :math:`v = \beta_2^{s_2} V` (see
    :class:`_Average`), so that, with :math:`\kappa = \sqrt{\beta_2^{s_2} / (1 - \beta_2^t)}`,

    .. math::
        \theta \leftarrow \theta - A\,\frac{M}{\sqrt{V} + \epsilon/\kappa},\qquad
        A = \frac{\eta\,\beta_1^{s_1}}{(1 - \beta_1^t)\,\kappa}.

    Every bias correction and scale folds into the two scalars A and
    :math:`\epsilon/\kappa`, and a step makes 10 elementwise passes over the parameters
    instead of 13. Measured on the 652,824 float32 parameters of a 784-400-20 VAE (one
    thread, in cache-sized chunks): 1.02 ms per step with the plain update, 0.88 ms
    this way; on the 425,284 of Burda et al.'s model, 0.70 and 0.56 ms.
    """

    def __init__(
        self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ):
        self.lr = real_number(lr, "lr", above=0)
        self.beta1 = real_number(beta1, "beta1", at_least=0, below=1)
        self.beta2 = real_number(beta2, "beta2", at_least=0, below=1)
        self.eps = real_number(eps, "eps", above=0)
        self._m: _Average | None = None
        self._v: _Average | None = None
        self.step_count = 0
        self._buf: np.ndarray | None = None

    @property
    def m(self) -> np.ndarray | None:
        """The first moment m (a new array: the optimizer keeps it pre-scaled)."""
        return None if self._m is None else self._m.stored * self._m.scale

    @property
    def v(self) -> np.ndarray | None:
        """The second moment v (a new array, see :attr:`m`)."""
        return None if self._v is None else self._v.stored * self._v.scale

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad`` (both flat)."""
        _check_pair(params, grad)
        if self._m is None:
            self._m, self._v = _Average(params, self.beta1), _Average(params, self.beta2)
        self._buf = _chunk_buffer(self._buf, params)
        self.step_count += 1
        t = self.step_count
        decay_m, gain_m = self._m.coefficients()
        decay_v, gain_v = self._v.coefficients()
        # the bias corrections and the moments' scales, folded into two scalars (math.sqrt,
        # not np.sqrt: a NumPy float64 scalar would turn the float32 products below into
        # float64 loops with casts, 7x slower, measured)
        kappa = math.sqrt(self._v.scale / (1 - self.beta2**t))
        step_size = self.lr * self._m.scale / ((1 - self.beta1**t) * kappa)
        eps = self.eps / kappa
        M, V = self._m.stored, self._v.stored
        for sl in _chunks(params.size):  # cache-sized pieces: see CHUNK
            buf = self._buf[:sl.stop - sl.start]
            p, g, m, v = params[sl], grad[sl], M[sl], V[sl]
            # M <- M + gain_m g ; V <- V + gain_v g^2 (each after a decay, on a renormalizing step)
            if decay_m is not None:
                m *= decay_m
            np.multiply(g, gain_m, out=buf)
            m += buf
            if decay_v is not None:
                v *= decay_v
            np.multiply(g, g, out=buf)
            buf *= gain_v
            v += buf
            # theta <- theta - A M / (sqrt(V) + eps / kappa)
            np.sqrt(v, out=buf)
            buf += eps
            np.divide(m, buf, out=buf)
            buf *= step_size
            p -= buf
        for avg, decay in ((self._m, decay_m), (self._v, decay_v)):
            if decay is not None:  # just renormalized, the only time stored values decay:
                flush_subnormals(avg.stored)  # why this is harmless: _flush_decayed_moments

    def state_dict(self) -> dict:
        """The state as plain arrays: ``step_count``, and m and v *as kept*, pre-scaled:
        the first moment is ``beta1**m_scale_steps * m``, the second
        ``beta2**v_scale_steps * v`` (:class:`_Average`). Saving the kept numbers, not the
        products, is what lets a resumed run continue bit for bit as the original one."""
        state = {"step_count": np.int64(self.step_count)}
        if self._m is not None:
            state["m"] = self._m.stored.copy()
            state["v"] = self._v.stored.copy()
            state["m_scale_steps"] = np.int64(self._m.s)
            state["v_scale_steps"] = np.int64(self._v.s)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s result (a state without the ``*_scale_steps``
        entries, as older checkpoints have, holds the moments themselves: scale steps 0)."""
        self.step_count = int(state["step_count"])
        if "m" in state:
            self._m = _Average(np.asarray(state["m"]), self.beta1)
            self._v = _Average(np.asarray(state["v"]), self.beta2)
            for avg, key in ((self._m, "m"), (self._v, "v")):
                avg.stored[...] = state[key]
                avg.s = int(state.get(f"{key}_scale_steps", 0))
        else:
            self._m = self._v = None


class BurdaAdam:
    r"""The Adam variant in Burda, Grosse & Salakhutdinov's released IWAE code (2015).

    It differs from :class:`Adam` in five ways, each of which changes the trajectory:

    * :math:`\beta_1 = 0.99` by default (not 0.9);
    * the second moment starts at **ones**, not zeros (:math:`v_0 = 1`);
    * :math:`\epsilon = 10^{-4}` is added to :math:`\sqrt{v}` itself, outside the
      bias correction, which is folded into the step size;
    * their Theano function applies all updates *simultaneously*, so the parameter
      update of step t uses the moments **before** step t's gradient enters them (the
      first step does not move the parameters; each gradient acts one step later);
    * their objective is the *sum* over the minibatch, ours the mean (nats per
      datapoint): ``grad_scale`` (the batch size) multiplies our gradient into their
      units, which matters because :math:`v_0 = 1` and :math:`\epsilon` are not
      scale-free.

    With :math:`g_t` = ``grad_scale`` times the gradient of the loss at step t = 1, 2, ...:

    .. math::
        \theta_t = \theta_{t-1} - \alpha_t\,\frac{m_{t-1}}{\sqrt{v_{t-1}} + \epsilon},\qquad
        \alpha_t = \eta\,\frac{\sqrt{1-\beta_2^{\,t}}}{1-\beta_1^{\,t}},

        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\qquad m_0 = 0,\ v_0 = 1.

    (Their code ascends the ELBO; descending our negative ELBO is the same step.)
    """

    def __init__(self, lr: float = 1e-3, beta1: float = 0.99, beta2: float = 0.999,
                 eps: float = 1e-4, grad_scale: float = 1.0):
        self.lr = real_number(lr, "lr", above=0)
        self.beta1 = real_number(beta1, "beta1", at_least=0, below=1)
        self.beta2 = real_number(beta2, "beta2", at_least=0, below=1)
        self.eps = real_number(eps, "eps", above=0)
        self.grad_scale = real_number(grad_scale, "grad_scale", above=0)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.step_count = 0
        self._buf: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad`` (both flat)."""
        _check_pair(params, grad)
        if self.m is None:
            self.m = aligned_zeros(params.size, params.dtype)
            self.v = aligned_zeros(params.size, params.dtype)
            self.v[...] = 1
        self._buf = _chunk_buffer(self._buf, params)
        self.step_count += 1
        t = self.step_count
        alpha = self.lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        for sl in _chunks(params.size):  # cache-sized pieces: see CHUNK
            self._update(params[sl], grad[sl], self.m[sl], self.v[sl],
                         self._buf[:sl.stop - sl.start], alpha)
        # v starts at 1: where the gradient is always 0 it decays into the subnormal range
        # after about 87,000 steps (35 epochs of their batch 20) and would stay there
        _flush_decayed_moments(t, self.m, self.v)

    def _update(self, params, grad, m, v, buf, alpha: float) -> None:
        b1, b2, c = self.beta1, self.beta2, self.grad_scale
        # 1. the parameter step, from the moments as they were before this gradient
        np.sqrt(v, out=buf)
        buf += self.eps
        np.divide(m, buf, out=buf)
        buf *= alpha
        params -= buf
        # 2. then the moments take in this step's gradient (in the units of a batch sum)
        m *= b1
        np.multiply(grad, (1 - b1) * c, out=buf)
        m += buf
        v *= b2
        np.multiply(grad, grad, out=buf)
        buf *= (1 - b2) * c * c
        v += buf

    def state_dict(self) -> dict:
        state = {"step_count": np.int64(self.step_count)}
        if self.m is not None:
            state["m"] = self.m.copy()
            state["v"] = self.v.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        if "m" in state:
            self.m = aligned_copy(np.asarray(state["m"]))
            self.v = aligned_copy(np.asarray(state["v"]))
        else:
            self.m = self.v = None


#: the optimizers :func:`make_optimizer` builds by name
OPTIMIZERS = ("adam", "sgd", "burda-adam")


def make_optimizer(name: str, lr: float, **kwargs):
    """Build ``"adam"``, ``"sgd"`` or ``"burda-adam"`` (:class:`BurdaAdam`) by name.

    For ``"burda-adam"`` pass ``grad_scale``, the batch size, to act on the gradient of
    the minibatch *sum* as their code does (see :class:`BurdaAdam`).
    """
    choice(name, OPTIMIZERS, "optimizer")
    return {"adam": Adam, "sgd": SGD, "burda-adam": BurdaAdam}[name](lr=lr, **kwargs)
