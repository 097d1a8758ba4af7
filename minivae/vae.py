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

Data flow (each arrow one method below)::

    x -> encode -> (mu, log_var) -> z = mu + sigma*eps -> decode -> likelihood params
      -> log p(x|z), KL -> loss
    backward: dL/d(decoder out) -> decode_backward -> dz -> (dmu, dlog_var) (+ KL's own
      gradient) -> encode_backward

Given ``eps`` the loss is a deterministic function of the parameters, which is
what lets :mod:`minivae.gradcheck` verify the whole gradient by finite
differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .distributions import (
    gaussian_log_prob,
    kl_diag_standard_normal_grad,
    kl_diag_standard_normal_per_dim,
    reparameterize,
    standard_normal_log_prob,
)
from .likelihoods import LIKELIHOODS, make_likelihood
from .mlp import MLP
from .params import ParamDict

KL_MODES = ("analytic", "mc")
#: what the encoder's second head emits: log sigma^2 itself, or log sigma (log_var = 2 * head)
ENCODER_SCALES = ("log_var", "log_std")
_DTYPES = {"float32": np.float32, "float64": np.float64}


def _as_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def positive_int(value, name: str) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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

    Parameter order
    ---------------
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
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {likelihood!r}")
        self.likelihood_name = likelihood
        self.fixed_log_var = float(fixed_log_var)
        self.likelihood = make_likelihood(likelihood, self.fixed_log_var)
        self.activation = activation
        if encoder_scale not in ENCODER_SCALES:
            raise ValueError(f"encoder_scale must be one of {ENCODER_SCALES}, "
                             f"got {encoder_scale!r}")
        self.encoder_scale = encoder_scale
        self.dtype = _as_dtype(dtype)
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
        """Validate a data batch: an array of shape (B, D) with the model's dtype, all finite."""
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
        if not np.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        return x

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

    @staticmethod
    def _check_kl(kl: str, beta: float) -> float:
        if kl not in KL_MODES:
            raise ValueError(f"kl must be one of {KL_MODES}, got {kl!r}")
        beta = float(beta)
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        return beta

    def sample_eps(self, rng: np.random.Generator, batch: int, k: int = 1) -> np.ndarray:
        """Standard-normal noise of shape (k, batch, Z) in the model's dtype."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
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

    def decode_backward(self, d_out, cache, grads: ParamDict) -> np.ndarray:
        """Write the decoder's parameter gradients; return dL/dz with z's shape."""
        mlp_cache, lead = cache
        dz = self.decoder.backward(
            self.params, d_out.reshape(-1, d_out.shape[-1]), mlp_cache, grads
        )
        return dz.reshape(*lead, self.latent_dim)

    def log_px(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """log p(x|z) in nats, summed over data dimensions: shape out.shape[:-1]."""
        return self.likelihood.log_prob(x, out, self.params)

    # ------------------------------------------------------------------
    # The negative ELBO and its gradient
    # ------------------------------------------------------------------

    def _forward(self, x, eps, kl: str):
        mu, log_var, enc_cache = self.encode(x)
        z, sigma = reparameterize(mu, log_var, eps)
        out, dec_cache = self.decode(z)
        # log p(x|z), shape (K, B); lik_cache keeps what its gradient can reuse
        log_px, lik_cache = self.likelihood.log_prob_and_cache(x, out, self.params)
        kl_per_dim = kl_diag_standard_normal_per_dim(mu, log_var)  # (B, Z)
        if kl == "analytic":
            kl_term = np.sum(kl_per_dim, axis=1)
        else:
            # log q(z|x) - log p(z) at the same samples, averaged over K
            log_q = gaussian_log_prob(z, mu, log_var)
            kl_term = np.mean(log_q - standard_normal_log_prob(z), axis=0)
        recon = -np.mean(log_px, axis=0)
        cache = (mu, log_var, enc_cache, z, sigma, out, dec_cache, lik_cache)
        return recon, kl_term, kl_per_dim, cache

    def elbo_terms(self, x, eps, *, kl: str = "analytic", beta: float = 1.0) -> ELBOTerms:
        """The reconstruction and KL parts of the negative ELBO (see :class:`ELBOTerms`)."""
        beta = self._check_kl(kl, beta)
        x = self.check_x(x)
        eps = self.check_eps(eps, x.shape[0])
        recon, kl_term, kl_per_dim, _ = self._forward(x, eps, kl)
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
        x = self.check_x(x)
        eps = self.check_eps(eps, x.shape[0])
        recon, kl_term, _, cache = self._forward(x, eps, kl)
        loss = float(np.mean(recon + beta * kl_term))

        mu, log_var, enc_cache, z, sigma, dec_out, dec_cache, lik_cache = cache
        K, B = eps.shape[0], eps.shape[1]
        grads = self.grad_out(out)

        # reconstruction: loss contains -(1/(K B)) sum_{k,b} log p(x_b | z_kb)
        weight = np.full((K, B), -1.0 / (K * B), dtype=self.dtype)
        d_out = self.likelihood.log_prob_grad_from_cache(
            x, dec_out, self.params, weight, grads, lik_cache
        )
        dz = self.decode_backward(d_out, dec_cache, grads)

        if kl == "mc":
            # -log p(z) = 0.5 z^2 + const adds beta/(K B) * z to dL/dz.
            dz += (beta / (K * B)) * z
        # Through z = mu + sigma * eps: dz/dmu = 1, dz/dlog_var = 0.5 * sigma * eps.
        d_mu = np.sum(dz, axis=0)
        d_log_var = 0.5 * sigma * np.sum(dz * eps, axis=0)
        if kl == "analytic":
            g_mu, g_log_var = kl_diag_standard_normal_grad(mu, log_var)
            d_mu += (beta / B) * g_mu
            d_log_var += (beta / B) * g_log_var
        else:
            # log q(z|x) at z = mu + sigma*eps equals sum_j -0.5 (log 2pi + log_var_j + eps_j^2)
            # exactly, so its total derivative is -0.5 per log_var_j and 0 wrt mu; summed
            # over the K samples and scaled by beta/(K B) that is -0.5 beta / B.
            d_log_var -= 0.5 * beta / B
        self.encode_backward(d_mu, d_log_var, enc_cache, grads)
        return loss, grads

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
            return ParamDict(self.param_specs, np.empty(self.n_params, dtype=self.dtype))
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
        out, _ = self.decode(np.asarray(z, dtype=self.dtype))
        return self.likelihood.mean(out, self.params)

    def sample(self, rng: np.random.Generator, n: int, *, mean: bool = True) -> np.ndarray:
        """n draws z ~ p(z) pushed through the decoder: the mean of p(x|z), or a sample of it."""
        n = positive_int(n, "n")
        z = rng.standard_normal((n, self.latent_dim), dtype=self.dtype)
        out, _ = self.decode(z)
        if mean:
            return self.likelihood.mean(out, self.params)
        return self.likelihood.sample(out, self.params, rng)

    def log_likelihood(self, x, k: int = 5000, *, rng: np.random.Generator | None = None,
                       chunk_size: int | None = None):
        """Importance-sampled estimate of log p(x) per datapoint, with q(z|x) as the proposal.

        Delegates to :func:`minivae.objectives.importance_sampled_log_likelihood`
        (imported here, at call time, because objectives are built on top of
        this class); see that function for the estimator and its standard error.
        """
        from .objectives import importance_sampled_log_likelihood

        return importance_sampled_log_likelihood(self, x, k=k, rng=rng, chunk_size=chunk_size)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Mean of p(x|z) at z = mu(x): a picture of the reconstruction (not an ELBO)."""
        mu, _, _ = self.encode(self.check_x(x))
        return self.decode_mean(mu)
