r"""The variational autoencoder: encoder, reparameterization, decoder, likelihood.

Model and objective (all in nats):

.. math::

    p(z) = N(0, I),\qquad p_\theta(x|z) \text{ from the decoder},\qquad
    q_\phi(z|x) = N(\mu_\phi(x), \mathrm{diag}(e^{v_\phi(x)}))

    \mathrm{loss}(x) = -\mathrm{ELBO} =
      \frac1B\sum_{b=1}^B\Big[-\frac1K\sum_{k=1}^K \log p_\theta(x_b|z_{kb})
      + \beta\,\mathrm{KL}_b\Big],\qquad z_{kb} = \mu_b + e^{v_b/2}\odot\epsilon_{kb}

where :math:`\mathrm{KL}_b` is either the closed form
:math:`\mathrm{KL}(q(z|x_b)\,\|\,N(0,I))` or its Monte Carlo estimate
:math:`\frac1K\sum_k[\log q(z_{kb}|x_b) - \log p(z_{kb})]` at the same samples.

Data flow (each arrow one method below; :meth:`VAE.forward` runs the top line once and
returns every intermediate as a :class:`Forward`, which every objective shares)::

    x -> encode -> (mu, log_var) -> z = mu + sigma*eps -> decode -> decoder output
      -> log p(x|z) (the likelihood); KL(q || p(z)) -> loss
    backward: log_lik_backward (likelihood, then decoder) -> dz
      -> reparameterize_backward -> (dmu, dlog_var) (+ the KL's own gradient)
      -> encode_backward

Everything in the backward line but its last arrow is one method, ``_backward_to_q``:
:meth:`VAE.loss_and_grad` continues into the encoder from it, and
:meth:`VAE.loss_and_q_grad` stops there, returning the gradient with respect to q's own
parameters (mu, log_var), for optimizing q directly with the network held fixed.

Given ``eps`` the loss is a deterministic function of the parameters, which is
what lets :mod:`minivae.gradcheck` verify the whole gradient by finite
differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import choice, float_dtype, generator, positive_int
from .distributions import (
    kl_diag_standard_normal_grad,
    kl_diag_standard_normal_per_dim,
    reparameterize,
    reparameterize_backward,
    reparameterized_log_q,
    reparameterized_log_q_backward,
    standard_normal_log_prob,
)
from .likelihoods import LIKELIHOODS, make_likelihood
from .mlp import MLP
from .numerics import flush_subnormals
from .params import ParamDict, aligned_empty

#: how the ELBO's KL term is computed: closed form, or Monte Carlo at the same samples
KL_MODES = ("analytic", "mc")
#: what the encoder's second head emits: log sigma^2 itself, or log sigma (log_var = 2 * head)
ENCODER_SCALES = ("log_var", "log_std")


@dataclass
class Forward:
    r"""Everything one pass x -> q(z|x) -> z -> p(x|z) computed (see :meth:`VAE.forward`).

    Shapes: ``x`` (B, D); ``eps`` and ``z`` (K, B, Z); ``mu``, ``log_var``, ``sigma``
    (B, Z); ``dec_out`` (K, B, out_dim), the decoder's output (the likelihood's
    parameters); ``log_lik`` (K, B), :math:`\log p(x_b|z_{kb})` in nats. The caches
    are what the backward passes need.
    """

    x: np.ndarray
    eps: np.ndarray
    mu: np.ndarray
    log_var: np.ndarray
    sigma: np.ndarray
    z: np.ndarray
    dec_out: np.ndarray
    log_lik: np.ndarray
    enc_cache: Any
    dec_cache: Any
    lik_cache: Any

    @property
    def K(self) -> int:
        """Samples of z per datapoint."""
        return self.eps.shape[0]

    @property
    def B(self) -> int:
        """Datapoints in the batch."""
        return self.eps.shape[1]


@dataclass
class ELBOTerms:
    """The pieces of the negative ELBO for one batch, in nats per datapoint.

    ``recon[b]`` is :math:`-\\frac1K\\sum_k\\log p(x_b|z_{kb})`; ``kl[b]`` is the
    KL term as computed (closed form or Monte Carlo); ``kl_per_dim`` is the
    closed-form KL per latent dimension, shape (B, Z) (always closed form, so
    it can be printed and tested whatever the KL mode); ``loss`` is
    ``mean(recon + beta * kl)``.
    """

    recon: np.ndarray
    kl: np.ndarray
    kl_per_dim: np.ndarray
    loss: float
    beta: float


class VAE:
    r"""A VAE with MLP encoder and decoder and hand-written backprop.

    Parameters
    ----------
    input_dim : int
        D, the number of data dimensions.
    latent_dim : int
        Z, the number of latent dimensions.
    hidden : sequence of int
        Hidden-layer widths of the encoder, e.g. ``(400,)`` or ``(200, 200)``;
        ``()`` makes the encoder affine.
    decoder_hidden : sequence of int, optional
        Hidden widths of the decoder; defaults to ``reversed(hidden)``. ``()``
        makes the decoder affine (the linear VAE of PPCA).
    likelihood : str
        ``"bernoulli"`` (decoder emits logits), ``"gaussian-hetero"`` (decoder
        emits a mean and a log-variance per dimension), ``"gaussian-shared"``
        (one learned log-variance vector ``decoder.log_var`` of shape (D,)),
        ``"gaussian-isotropic"`` (one learned scalar log-variance, shape (1,):
        the PPCA noise model) or ``"gaussian-fixed"`` (log-variance
        ``fixed_log_var``, not learned).
    activation : str
        ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"sigmoid"`` or ``"softplus"``.
    dtype : float32 or float64
        Fixed at construction; every array of the model follows it.
    seed : int
        Seeds the initialization (``numpy.random.default_rng(seed)``).
    fixed_log_var : float
        The log-variance of the ``"gaussian-fixed"`` likelihood.
    encoder_scale : ``"log_var"`` or ``"log_std"``
        What the encoder's second head emits: the log-variance itself (default), or
        the log standard deviation :math:`s`, with :math:`\log\sigma^2 = 2s` (Burda
        et al.'s parameterization, :math:`\sigma = e^{s}`). The model is the same; the
        parameterization, and hence an optimizer's trajectory, differs.

    Notes
    -----
    The order of the parameters in the flat vector:
    ``encoder.0.W, encoder.0.b, ..., encoder.L.W, encoder.L.b, decoder.0.W,
    decoder.0.b, ..., decoder.M.b`` and, for ``"gaussian-shared"`` and
    ``"gaussian-isotropic"``, finally ``decoder.log_var``. The encoder's last
    layer has 2Z outputs: columns ``[:Z]`` are mu and ``[Z:]`` are log_var.
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden=(200,),
        decoder_hidden=None,
        likelihood: str = "bernoulli",
        activation: str = "relu",
        dtype: Any = np.float64,
        seed: int = 0,
        fixed_log_var: float = 0.0,
        encoder_scale: str = "log_var",
    ):
        self.input_dim = positive_int(input_dim, "input_dim")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.hidden = self._widths(hidden, "hidden")
        self.decoder_hidden = (
            tuple(reversed(self.hidden))
            if decoder_hidden is None
            else self._widths(decoder_hidden, "decoder_hidden")
        )
        self.likelihood_name = choice(likelihood, LIKELIHOODS, "likelihood")
        self.fixed_log_var = float(fixed_log_var)
        self.likelihood = make_likelihood(likelihood, self.fixed_log_var)
        self.activation = activation
        self.encoder_scale = choice(encoder_scale, ENCODER_SCALES, "encoder_scale")
        self.dtype = float_dtype(dtype)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

        D, Z = self.input_dim, self.latent_dim
        self.encoder = MLP((D, *self.hidden, 2 * Z), activation, prefix="encoder")
        self.decoder = MLP(
            (Z, *self.decoder_hidden, self.likelihood.out_dim(D)), activation, prefix="decoder"
        )
        self.param_specs = (
            self.encoder.param_specs()
            + self.decoder.param_specs()
            + self.likelihood.param_specs(D)
        )
        self.params = ParamDict.zeros(self.param_specs, self.dtype)
        rng = np.random.default_rng(self.seed)
        self.encoder.init_params(self.params, rng)
        self.decoder.init_params(self.params, rng)
        self.likelihood.init_params(self.params, D)

    @staticmethod
    def _widths(widths, name):
        try:
            out = tuple(widths)
        except TypeError as exc:
            raise TypeError(f"{name} must be a sequence of positive integers, got {widths!r}") \
                from exc
        for w in out:
            positive_int(w, f"every entry of {name}")
        return out

    # ------------------------------------------------------------------
    # Parameters and configuration
    # ------------------------------------------------------------------

    @property
    def flat(self) -> np.ndarray:
        """The flat parameter vector (a live array: writing into it changes the model)."""
        return self.params.flat

    @property
    def n_params(self) -> int:
        return self.params.flat.size

    def get_flat(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return self.params.flat.copy()

    def set_flat(self, flat: np.ndarray) -> None:
        """Copy ``flat`` into the parameters (exact: no dtype conversion is allowed)."""
        flat = np.asarray(flat)
        if flat.shape != self.params.flat.shape:
            raise ValueError(
                f"flat parameter vector must have shape {self.params.flat.shape}, got {flat.shape}"
            )
        if flat.dtype != self.dtype:
            raise TypeError(f"flat parameter vector must have dtype {self.dtype}, got {flat.dtype}")
        self.params.flat[...] = flat

    def new_grad(self) -> ParamDict:
        """A zero gradient with the parameters' layout."""
        return self.params.zeros_like()

    def config(self) -> dict:
        """The constructor arguments, JSON-serializable; ``VAE.from_config`` inverts it."""
        return {
            "input_dim": self.input_dim,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "decoder_hidden": list(self.decoder_hidden),
            "likelihood": self.likelihood_name,
            "activation": self.activation,
            "dtype": str(self.dtype),
            "seed": self.seed,
            "fixed_log_var": self.fixed_log_var,
            "encoder_scale": self.encoder_scale,
        }

    @classmethod
    def from_config(cls, config: dict) -> VAE:
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, "
            f"hidden={self.hidden}, decoder_hidden={self.decoder_hidden}, "
            f"likelihood={self.likelihood_name!r}, activation={self.activation!r}, "
            f"dtype={self.dtype}, n_params={self.n_params}"
            + (f", encoder_scale={self.encoder_scale!r})" if self.encoder_scale != "log_var"
               else ")")
        )

    # ------------------------------------------------------------------
    # Input validation
    # ------------------------------------------------------------------

    def check_x(self, x) -> np.ndarray:
        """Validate a data batch: an array of shape (B, D) with the model's dtype, all finite,
        and only 0/1 for the Bernoulli likelihood (its log-probability means nothing else).

        Returns ``x`` in C order (a copy if it was not: a slice of a Fortran-ordered array,
        such as one loaded from some .npz files, makes every elementwise operation that mixes
        it with the model's C-ordered arrays several times slower; measured: 122 instead of
        18 us for one 128 x 784 float32 product).
        """
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.input_dim or x.shape[0] < 1:
            raise ValueError(
                f"x must have shape (batch, {self.input_dim}) with batch >= 1, got {x.shape}"
            )
        if x.dtype != self.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the model is {self.dtype}; convert it explicitly "
                f"with x.astype(np.{self.dtype})"
            )
        self.likelihood.check_data(x)  # finite; 0/1 for the Bernoulli likelihood
        return np.ascontiguousarray(x)

    def check_eps(self, eps, batch: int) -> np.ndarray:
        """Validate noise of shape (K, B, Z) with the model's dtype."""
        if not isinstance(eps, np.ndarray):
            raise TypeError(f"eps must be a numpy array, got {type(eps).__name__}")
        if eps.ndim != 3 or eps.shape[1:] != (batch, self.latent_dim) or eps.shape[0] < 1:
            raise ValueError(
                f"eps must have shape (K, {batch}, {self.latent_dim}) with K >= 1 "
                f"(K samples per datapoint), got {eps.shape}"
            )
        if eps.dtype != self.dtype:
            raise TypeError(f"eps has dtype {eps.dtype} but the model is {self.dtype}")
        if not np.isfinite(eps).all():
            raise ValueError("eps contains NaN or inf")
        return eps

    def check_q(self, mu, log_var, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Validate q's parameters: two finite arrays of shape (batch, Z), the model's dtype."""
        for name, a in (("mu", mu), ("log_var", log_var)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
            if a.shape != (batch, self.latent_dim):
                raise ValueError(f"{name} must have shape ({batch}, {self.latent_dim}), "
                                 f"got {a.shape}")
            if a.dtype != self.dtype:
                raise TypeError(f"{name} has dtype {a.dtype} but the model is {self.dtype}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or inf")
        return mu, log_var

    @staticmethod
    def _check_kl(kl: str, beta: float) -> float:
        choice(kl, KL_MODES, "kl")
        beta = float(beta)
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        return beta

    def sample_eps(self, rng: np.random.Generator, batch: int, k: int = 1) -> np.ndarray:
        """Standard-normal noise of shape (k, batch, Z) in the model's dtype."""
        generator(rng)
        k = positive_int(k, "k")
        return rng.standard_normal((k, batch, self.latent_dim), dtype=self.dtype)

    # ------------------------------------------------------------------
    # The stages of the data flow, each with its backward
    # ------------------------------------------------------------------

    def encode(self, x: np.ndarray):
        """q(z|x): returns ``(mu, log_var, cache)``, each of shape (B, Z).

        With ``encoder_scale="log_std"`` the second head s is doubled: log_var = 2 s.
        """
        out, cache = self.encoder.forward(self.params, x)
        Z = self.latent_dim
        log_var = out[:, Z:] if self.encoder_scale == "log_var" else 2 * out[:, Z:]
        return out[:, :Z], log_var, cache

    def encode_backward(self, d_mu, d_log_var, cache, grads: ParamDict) -> None:
        """Write the encoder's parameter gradients given dL/dmu and dL/dlog_var.

        With ``encoder_scale="log_std"``, dL/ds = 2 dL/dlog_var (log_var = 2 s).
        """
        d_head = d_log_var if self.encoder_scale == "log_var" else 2 * d_log_var
        d_out = np.concatenate([d_mu, d_head], axis=1)
        self.encoder.backward(self.params, d_out, cache, grads, need_dx=False)

    def decode(self, z: np.ndarray):
        """Decoder network on latents of shape (..., Z): returns ``(out, cache)``.

        ``out`` has shape (..., out_dim); leading axes (K, B) are flattened to
        one batch axis only at the decoder's edge and restored afterwards.
        """
        lead = z.shape[:-1]
        out, cache = self.decoder.forward(self.params, z.reshape(-1, self.latent_dim))
        return out.reshape(*lead, out.shape[-1]), (cache, lead)

    def decode_backward(self, d_out, cache, grads: ParamDict | None) -> np.ndarray:
        """Write the decoder's parameter gradients; return dL/dz with z's shape.

        ``grads=None`` computes dL/dz only (see :meth:`loss_and_q_grad`)."""
        mlp_cache, lead = cache
        dz = self.decoder.backward(
            self.params, d_out.reshape(-1, d_out.shape[-1]), mlp_cache, grads
        )
        return dz.reshape(*lead, self.latent_dim)

    def log_lik(self, x: np.ndarray, dec_out: np.ndarray) -> np.ndarray:
        """log p(x|z) in nats, summed over data dimensions: shape dec_out.shape[:-1]."""
        return self.likelihood.log_lik(x, dec_out, self.params)

    def forward(self, x: np.ndarray, eps: np.ndarray, encoded=None, *,
                backward: bool = True) -> Forward:
        """The whole top line of the data flow, once: encode, reparameterize, decode, log p(x|z).

        ``x`` (B, D) and ``eps`` (K, B, Z) are checked (shape, dtype, finite). Every
        objective (the ELBO here; the IWAE bound, the score-function gradient and the
        log p(x) estimates in :mod:`minivae.objectives`) starts from this result.
        ``encoded``, the ``(mu, log_var, cache)`` of an earlier ``encode(x)``, skips
        the encoder (an estimate of log p(x) draws many chunks of eps for one x).
        ``backward=False`` says that no backward pass will follow: the likelihood then
        skips what it would compute for one (the Bernoulli's elementwise gradient).
        """
        x = self.check_x(x)
        eps = self.check_eps(eps, x.shape[0])
        mu, log_var, enc_cache = self.encode(x) if encoded is None else encoded
        z, sigma = reparameterize(mu, log_var, eps)
        dec_out, dec_cache = self.decode(z)
        # lik_cache keeps what the likelihood's gradient can reuse (the Bernoulli computes its
        # elementwise gradient on the way)
        if backward:
            log_lik, lik_cache = self.likelihood.log_lik_and_cache(x, dec_out, self.params)
        else:
            log_lik, lik_cache = self.likelihood.log_lik(x, dec_out, self.params), None
        return Forward(x, eps, mu, log_var, sigma, z, dec_out, log_lik, enc_cache, dec_cache,
                       lik_cache)

    def log_lik_backward(self, fwd: Forward, weight: np.ndarray | float,
                         grads: ParamDict | None) -> np.ndarray:
        r"""Backward of :math:`\sum_{k,b} w_{kb}\log p(x_b|z_{kb})` through likelihood and decoder.

        ``weight`` (K, B), or one number for all samples, is
        :math:`\partial L/\partial\log p(x_b|z_{kb})`. Writes the
        decoder's (and the likelihood's own) parameter gradients into ``grads`` and
        returns :math:`\partial L/\partial z` of shape (K, B, Z). With ``grads=None``
        the parameter gradients are skipped and only :math:`\partial L/\partial z` is
        computed (half the decoder's products).
        """
        d_out = self.likelihood.log_lik_grad_from_cache(
            fwd.x, fwd.dec_out, self.params, weight, grads, fwd.lik_cache)
        # Fast path: entries below the smallest normal float become 0 before the decoder's
        # matrix products. A trained Bernoulli decoder gives always-off pixels logits below
        # -83, where sigmoid(l) / B is subnormal (784-400-20 after 93 epochs: 1.2% of these
        # entries), and OpenBLAS multiplies subnormal operands through a slow microcode path:
        # that step's products took 15.4 ms instead of ~5.5 (one thread). Each flushed entry
        # is a gradient contribution below 1.2e-38 (float32; 2.2e-308 in float64): it could
        # change a parameter's gradient by at most B times that, far below its roundoff.
        flush_subnormals(d_out)
        return self.decode_backward(d_out, fwd.dec_cache, grads)

    # ------------------------------------------------------------------
    # The negative ELBO and its gradient
    # ------------------------------------------------------------------

    @staticmethod
    def _kl_terms(fwd: Forward, kl: str):
        """The closed-form KL per dimension (B, Z), and the KL term as computed (B,)."""
        kl_per_dim = kl_diag_standard_normal_per_dim(fwd.mu, fwd.log_var)
        if kl == "analytic":
            return kl_per_dim, np.sum(kl_per_dim, axis=1)
        # log q(z|x) - log p(z) at the same samples, averaged over K
        log_q = reparameterized_log_q(fwd.log_var, fwd.eps)
        return kl_per_dim, np.mean(log_q - standard_normal_log_prob(fwd.z), axis=0)

    def elbo_terms(self, x, eps, *, kl: str = "analytic", beta: float = 1.0) -> ELBOTerms:
        """The reconstruction and KL parts of the negative ELBO (see :class:`ELBOTerms`)."""
        beta = self._check_kl(kl, beta)
        fwd = self.forward(x, eps, backward=False)
        kl_per_dim, kl_term = self._kl_terms(fwd, kl)
        recon = -np.mean(fwd.log_lik, axis=0)
        loss = float(np.mean(recon + beta * kl_term))
        return ELBOTerms(recon, kl_term, kl_per_dim, loss, beta)

    def loss(self, x, eps, *, kl: str = "analytic", beta: float = 1.0) -> float:
        """The negative ELBO in nats per datapoint (see the module docstring)."""
        return self.elbo_terms(x, eps, kl=kl, beta=beta).loss

    def loss_and_grad(
        self, x, eps, *, kl: str = "analytic", beta: float = 1.0, out: ParamDict | None = None
    ) -> tuple[float, ParamDict]:
        """Negative ELBO (nats per datapoint) and its exact gradient.

        Parameters
        ----------
        x : array (B, D) of the model's dtype
        eps : array (K, B, Z) of the model's dtype
            Standard-normal noise; K samples per datapoint average the
            reconstruction term (and the KL term when ``kl="mc"``).
        kl : ``"analytic"`` (closed form, default) or ``"mc"``
        beta : float
            Weight of the KL term (1 gives the ELBO).
        out : ParamDict, optional
            Where to write the gradient (overwritten, never added to), e.g. one
            buffer from :meth:`new_grad` reused by every step of a training
            loop. By default a new one is allocated: for a large model a fresh
            parameter-sized array every step costs page faults (measured: about
            2x slower steps for 784-400-20 in float32, see scripts/bench.py).

        Returns
        -------
        loss : float
        grads : ParamDict
            The gradient (``out`` if given, else new) with the layout of
            ``model.params``; ``grads.flat`` lines up with ``model.flat``.
        """
        beta = self._check_kl(kl, beta)
        fwd = self.forward(x, eps)
        grads = self.grad_out(out)
        # everything up to q's parameters (decoder and likelihood gradients on the way) ...
        losses, d_mu, d_log_var = self._backward_to_q(fwd, kl, beta, grads)
        # ... and the last arrow, into the encoder
        self.encode_backward(d_mu, d_log_var, fwd.enc_cache, grads)
        return float(np.mean(losses)), grads

    def _backward_to_q(self, fwd: Forward, kl: str, beta: float, grads: ParamDict | None):
        """Per-datapoint negative ELBO ``recon + beta * KL`` (B,), and the gradient of their
        mean with respect to q's parameters, (dL/dmu, dL/dlog_var), each (B, Z).

        Writes the decoder's and the likelihood's parameter gradients into ``grads`` on the
        way (skipped when ``grads`` is None). :meth:`loss_and_grad` pushes the result into
        the encoder; :meth:`loss_and_q_grad` returns it.
        """
        _, kl_term = self._kl_terms(fwd, kl)
        losses = -np.mean(fwd.log_lik, axis=0) + beta * kl_term
        K, B = fwd.K, fwd.B

        # reconstruction: the loss contains -(1/(K B)) sum_{k,b} log p(x_b | z_kb)
        dz = self.log_lik_backward(fwd, -1.0 / (K * B), grads)
        if kl == "mc":
            # the KL term is (beta/(K B)) sum_kb [log q(z_kb) - log p(z_kb)]; -log p(z) =
            # 0.5 |z|^2 + const adds (beta/(K B)) z to dL/dz
            dz += (beta / (K * B)) * fwd.z
        d_mu, d_log_var = reparameterize_backward(dz, fwd.eps, fwd.sigma)
        if kl == "analytic":
            g_mu, g_log_var = kl_diag_standard_normal_grad(fwd.mu, fwd.log_var)
            d_mu += (beta / B) * g_mu
            d_log_var += (beta / B) * g_log_var
        else:
            # ... and +log q(z|x) at its own sample, whose total derivative is -1/2 per log_var
            d_log_var += reparameterized_log_q_backward(
                np.full((K, B), beta / (K * B), dtype=self.dtype), fwd.log_var)
        return losses, d_mu, d_log_var

    def loss_and_q_grad(self, x, mu, log_var, eps, *, kl: str = "analytic",
                        beta: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""The negative ELBO of a given q, as a function of q's own parameters.

        The same loss as :meth:`loss_and_grad`, but for
        :math:`q_b = N(\mu_b, \mathrm{diag}(e^{v_b}))` given directly instead of computed
        by the encoder, and with the gradient taken with respect to ``mu`` and
        ``log_var`` (the decoder held fixed). It is exactly what :meth:`loss_and_grad`
        hands to :meth:`encode_backward` (both run :meth:`_backward_to_q`); here the
        decoder's parameter gradients are not computed at all. Optimizing q for each
        datapoint separately (the best Gaussian q*, :mod:`minivae.gaps`) needs this.

        Parameters
        ----------
        x : array (B, D); mu, log_var : arrays (B, Z); eps : array (K, B, Z)
            All of the model's dtype.
        kl, beta : as in :meth:`loss_and_grad`.

        Returns
        -------
        losses : array (B,)
            Each datapoint's negative ELBO estimate at these samples (nats); their mean
            is the number :meth:`loss_and_grad` returns.
        d_mu, d_log_var : arrays (B, Z)
            The gradient of ``losses.mean()``. Datapoint b's own negative ELBO depends
            only on row b, so ``B * d_mu[b]`` is the gradient of ``losses[b]``.
        """
        beta = self._check_kl(kl, beta)
        x = self.check_x(x)
        mu, log_var = self.check_q(mu, log_var, x.shape[0])
        fwd = self.forward(x, eps, encoded=(mu, log_var, None))
        return self._backward_to_q(fwd, kl, beta, None)

    def loss_and_grad_sampled(
        self,
        x,
        rng: np.random.Generator,
        *,
        k: int = 1,
        kl: str = "analytic",
        beta: float = 1.0,
        out: ParamDict | None = None,
    ) -> tuple[float, ParamDict]:
        """:meth:`loss_and_grad` with eps of shape (k, B, Z) drawn from ``rng``."""
        x = self.check_x(x)
        return self.loss_and_grad(
            x, self.sample_eps(rng, x.shape[0], k), kl=kl, beta=beta, out=out
        )

    def grad_out(self, out: ParamDict | None = None) -> ParamDict:
        """The gradient a backward pass writes into: ``out`` (checked), or a new one.

        A backward pass writes every entry (each layer's W and b by the MLP backward,
        the likelihood's own parameters by its gradient), so a new buffer needs no zero
        fill, and a reused one (``out=model.new_grad()`` once, then every step) is
        overwritten, never accumulated. Reusing one saves a parameter-sized allocation
        per step, whose page faults cost as much as a small model's whole step.
        """
        if out is None:
            return ParamDict(self.param_specs, aligned_empty(self.n_params, self.dtype))
        if not isinstance(out, ParamDict) or out.specs != self.params.specs:
            raise TypeError("out must be a ParamDict with the model's layout (model.new_grad())")
        if out.flat.dtype != self.dtype:
            raise TypeError(f"out has dtype {out.flat.dtype} but the model is {self.dtype}")
        return out

    # ------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------

    def decode_mean(self, z: np.ndarray) -> np.ndarray:
        """The mean of p(x|z) for latents of shape (N, Z) (pixel probabilities for Bernoulli)."""
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {z.shape}")
        out, _ = self.decode(z)
        return self.likelihood.mean(out, self.params)

    def sample(self, rng: np.random.Generator, n: int, *, mean: bool = True) -> np.ndarray:
        """n draws z ~ p(z) pushed through the decoder: the mean of p(x|z), or a sample of it."""
        generator(rng)
        n = positive_int(n, "n")
        z = rng.standard_normal((n, self.latent_dim), dtype=self.dtype)
        out, _ = self.decode(z)
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.sample(out, self.params, rng)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Mean of p(x|z) at z = mu(x): a picture of the reconstruction (not an ELBO)."""
        mu, _, _ = self.encode(self.check_x(x))
        return self.decode_mean(mu)
