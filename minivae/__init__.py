r"""minivae: a variational autoencoder in plain NumPy with hand-written, verified gradients.

Reading the code
================

Read the model in the order the data flows through it. Each stage below names its
equation, the code that computes it (forward and backward side by side), and the test
that proves it. Everything is in nats; shapes are x (B, D), eps and z (K, B, Z).

1. **The data** enters as a batch ``x`` of shape (B, D), in the model's dtype.
   :meth:`VAE.check_x <minivae.vae.VAE.check_x>` refuses anything else.

2. **The encoder** is an MLP (:class:`minivae.mlp.MLP`) of affine maps and activations,

   .. math::  h_0 = x,\qquad h_l = f(h_{l-1} W_l + b_l),\qquad
              \mathrm{out} = h_{L-1} W_L + b_L,

   each layer a forward/backward pair in :mod:`minivae.layers`
   (:func:`~minivae.layers.affine_forward` / :func:`~minivae.layers.affine_backward`:
   :math:`\partial L/\partial W = h^\top\delta`, :math:`\partial L/\partial h = \delta W^\top`).
   Proved by ``tests/test_layers.py`` (``test_affine_gradients``,
   ``test_activation_gradients``, ``test_mlp_gradients_full``: every partial derivative
   against fourth-order central differences).

3. **q(z|x)**: the encoder's 2Z outputs are the mean and the log-variance,
   :math:`q(z|x) = N(\mu, \mathrm{diag}(e^{v}))`, :math:`\sigma = e^{v/2}`
   (:meth:`VAE.encode <minivae.vae.VAE.encode>`).

4. **The reparameterization** :math:`z = \mu + \sigma\odot\epsilon`,
   :math:`\epsilon\sim N(0, I)` of shape (K, B, Z)
   (:func:`~minivae.distributions.reparameterize`), with its backward right under it
   (:func:`~minivae.distributions.reparameterize_backward`:
   :math:`\partial L/\partial\mu = \sum_k\partial L/\partial z_k`,
   :math:`\partial L/\partial v
   = \tfrac12\sigma\odot\sum_k \partial L/\partial z_k\odot\epsilon_k`).
   Proved by ``tests/test_reparameterization.py``.

5. **The decoder** is a second MLP from z to the likelihood's parameters
   (:meth:`VAE.decode <minivae.vae.VAE.decode>`); (K, B, Z) is flattened to (K B, Z)
   only at its edge.

6. **The likelihood** turns the decoder's output into :math:`\log p(x|z)`
   (:mod:`minivae.likelihoods`). Bernoulli from logits l:
   :math:`\log p(x|z) = \sum_d [x_d l_d - \mathrm{softplus}(l_d)]`, computed as
   :math:`-\sum_d \mathrm{softplus}((1 - 2x_d)\,l_d)`, the same number for x in {0, 1}
   with nothing to cancel, and a stable softplus (:mod:`minivae.numerics`);
   Gaussians include the
   :math:`\tfrac12\log 2\pi`. Proved by ``tests/test_distributions.py`` (against
   ``scipy.stats``) and ``tests/test_fast_paths.py``.

   Steps 2 to 6 run once in :meth:`VAE.forward <minivae.vae.VAE.forward>`, which
   returns every intermediate as a :class:`~minivae.vae.Forward`.

7. **The KL term** in closed form,
   :math:`\mathrm{KL}(q\,\|\,N(0, I)) = \tfrac12\sum_j(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)`
   (:func:`~minivae.distributions.kl_diag_standard_normal`, its gradient
   :math:`(\mu,\ \tfrac12(e^{v} - 1))` beside it), or by Monte Carlo at the same
   samples. Proved by ``test_kl_closed_form_matches_quadrature`` and
   ``test_kl_gradients``.

8. **The loss** is the negative ELBO in nats per datapoint,

   .. math::  \mathrm{loss} = \frac1B\sum_b\Big[-\frac1K\sum_k\log p(x_b|z_{kb})
              + \beta\,\mathrm{KL}_b\Big]

   (:meth:`VAE.loss_and_grad <minivae.vae.VAE.loss_and_grad>`). Proved by
   ``tests/test_vae.py::test_loss_is_recon_plus_beta_kl_recomputed_independently``.

9. **The backward pass** runs the arrows in reverse:
   :meth:`~minivae.vae.VAE.log_lik_backward` (likelihood, then decoder) gives
   :math:`\partial L/\partial z`; :func:`~minivae.distributions.reparameterize_backward`
   gives :math:`(\partial L/\partial\mu, \partial L/\partial v)`, to which the KL's own
   gradient is added; :meth:`~minivae.vae.VAE.encode_backward` finishes. Proved for
   every likelihood, activation, K, KL mode and depth by
   ``tests/test_vae_gradients.py`` (relative error at most 1e-6 along random
   directions, over all parameters and per block) and against PyTorch at 1e-10 by
   ``tests/test_torch_oracle.py``.

10. **The optimizer** updates the one flat parameter vector in place,
    :math:`\theta \leftarrow \theta - \eta\,\hat m/(\sqrt{\hat v} + \epsilon)`
    (:class:`~minivae.optim.Adam`, bias correction by the step count). Proved by
    ``tests/test_optim.py`` (the paper's per-coordinate formulas, step by step, and
    ``torch.optim.Adam``).

The same stages give the importance-weighted bound, the score-function gradient and the
importance-sampled :math:`\log p(x)` (:mod:`minivae.objectives`), and, with the gradient
stopped at q's own parameters (:meth:`VAE.loss_and_q_grad
<minivae.vae.VAE.loss_and_q_grad>`), where the gap between the ELBO and
:math:`\log p(x)` goes: the approximation and amortization gaps and ELBO surgery
(:mod:`minivae.gaps`, proved on exact models by ``tests/test_gaps.py``); the exact models and
the identities that check all of this with numbers are in :mod:`minivae.theory`; the
program around it (data, training runs, checkpoints, evaluation, pictures, the command
line) is :mod:`minivae.tool`.
"""

from .optim import SGD, Adam, BurdaAdam
from .params import ParamDict
from .vae import VAE, ELBOTerms, Forward

__version__ = "0.1.0"

__all__ = ["VAE", "ELBOTerms", "Forward", "ParamDict", "Adam", "BurdaAdam", "SGD",
           "__version__"]
