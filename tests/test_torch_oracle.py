"""PyTorch as an independent oracle (skipped when torch is not installed).

The same model is rebuilt in torch (float64) from minivae's weights, fed the
same eps, and its loss is written with torch's own distributions
(``torch.distributions.Normal``/``Bernoulli`` and ``kl_divergence``), so the
comparison shares no code with minivae. Loss and every gradient must agree to
1e-10 relative. The STL and DReG estimators are checked the same way, their surrogates
written with ``.detach()`` (q's parameters inside log q, and DReG's normalized weights).
"""

import itertools

import numpy as np
import pytest

from minivae import VAE
from minivae.layers import ACTIVATIONS
from minivae.likelihoods import LIKELIHOODS
from minivae.objectives import dreg_loss_and_grad, stl_loss_and_grad

torch = pytest.importorskip("torch")
D = torch.distributions

TORCH_ACTIVATIONS = {
    "relu": torch.relu,
    "leaky_relu": lambda a: torch.nn.functional.leaky_relu(a, 0.01),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
}


def mlp(params, prefix, n_layers, h, act):
    for i in range(n_layers):
        h = h @ params[f"{prefix}.{i}.W"] + params[f"{prefix}.{i}.b"]
        if i < n_layers - 1:
            h = act(h)
    return h


def torch_negative_elbo(model, params, x, eps, kl, beta):
    act = TORCH_ACTIVATIONS[model.activation]
    Z = model.latent_dim
    enc = mlp(params, "encoder", model.encoder.n_layers, x, act)
    mu, log_var = enc[:, :Z], enc[:, Z:]
    std = torch.exp(0.5 * log_var)
    q = D.Normal(mu, std)
    z = mu + std * eps  # (K, B, Z)
    out = mlp(params, "decoder", model.decoder.n_layers, z, act)
    px = torch_likelihood(model, params, out, x)
    recon = -px.log_prob(x).sum(-1).mean(0)  # (B,)
    if kl == "analytic":
        prior = D.Normal(torch.zeros_like(mu), torch.ones_like(std))
        kl_term = D.kl_divergence(q, prior).sum(-1)
    else:
        prior = D.Normal(torch.zeros_like(z), torch.ones_like(z))
        kl_term = (q.log_prob(z).sum(-1) - prior.log_prob(z).sum(-1)).mean(0)
    return (recon + beta * kl_term).mean()


CONFIGS = list(itertools.product(sorted(LIKELIHOODS), sorted(ACTIVATIONS), ("analytic", "mc")))


@pytest.mark.parametrize("likelihood, activation, kl", CONFIGS)
def test_loss_and_every_gradient_match_torch(likelihood, activation, kl):
    rng = np.random.default_rng(CONFIGS.index((likelihood, activation, kl)))
    model = VAE(7, 3, hidden=(6, 5), likelihood=likelihood, activation=activation, seed=1,
                fixed_log_var=-0.3)
    if "decoder.log_var" in model.params:
        log_var = model.params["decoder.log_var"]
        log_var[...] = rng.uniform(-1, 1, log_var.shape)
    if likelihood == "bernoulli":
        x = (rng.random((4, 7)) < 0.5).astype(np.float64)
    else:
        x = rng.standard_normal((4, 7))
    eps = rng.standard_normal((3, 4, 3))
    loss, grads = model.loss_and_grad(x, eps, kl=kl, beta=0.7)

    params_t = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    loss_t = torch_negative_elbo(model, params_t, torch.tensor(x), torch.tensor(eps), kl, 0.7)
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-10)
    for name, g in grads.items():
        np.testing.assert_allclose(g, params_t[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# --------------------------------------------------------------------------
# STL and DReG: the surrogate written with .detach(), differentiated by torch
# --------------------------------------------------------------------------


def torch_log_weights(model, params, x, eps, act, detach_q):
    """log w = log p(x|z) + log p(z) - log q(z|x), z = mu + std*eps; with ``detach_q`` the
    mean and std inside log q are detached (their path through z is kept)."""
    Z = model.latent_dim
    enc = mlp(params, "encoder", model.encoder.n_layers, x, act)
    mu, log_var = enc[:, :Z], enc[:, Z:]
    std = torch.exp(0.5 * log_var)
    z = mu + std * eps
    q = D.Normal(mu.detach(), std.detach()) if detach_q else D.Normal(mu, std)
    out = mlp(params, "decoder", model.decoder.n_layers, z, act)
    log_lik = torch_likelihood(model, params, out, x).log_prob(x).sum(-1)
    prior = D.Normal(torch.zeros_like(z), torch.ones_like(z))
    return log_lik, prior.log_prob(z).sum(-1), q.log_prob(z).sum(-1)


def torch_likelihood(model, params, out, x):
    Dx = model.input_dim
    if model.likelihood_name == "bernoulli":
        return D.Bernoulli(logits=out)
    if model.likelihood_name == "gaussian-hetero":
        return D.Normal(out[..., :Dx], torch.exp(0.5 * out[..., Dx:]))
    if model.likelihood_name in ("gaussian-shared", "gaussian-isotropic"):
        return D.Normal(out, torch.exp(0.5 * params["decoder.log_var"]))
    return D.Normal(out, torch.exp(torch.tensor(0.5 * model.fixed_log_var, dtype=x.dtype)))


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_match_torch_with_detach(likelihood, estimator):
    rng = np.random.default_rng(sorted(LIKELIHOODS).index(likelihood) + 40)
    model = VAE(6, 3, hidden=(5,), likelihood=likelihood, activation="tanh", seed=2,
                fixed_log_var=-0.3)
    if "decoder.log_var" in model.params:
        log_var = model.params["decoder.log_var"]
        log_var[...] = rng.uniform(-1, 1, log_var.shape)
    x = ((rng.random((4, 6)) < 0.5).astype(np.float64) if likelihood == "bernoulli"
         else rng.standard_normal((4, 6)))
    eps = rng.standard_normal((5, 4, 3))
    params_t = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    act = TORCH_ACTIVATIONS[model.activation]
    x_t, eps_t = torch.tensor(x), torch.tensor(eps)
    encoder = [v for k, v in params_t.items() if k.startswith("encoder")]
    decoder = [v for k, v in params_t.items() if not k.startswith("encoder")]
    if estimator == "stl":
        beta = 0.7
        loss, grads = stl_loss_and_grad(model, x, eps, beta=beta)
        log_lik, log_prior, log_q = torch_log_weights(model, params_t, x_t, eps_t, act, True)
        surrogate = -(log_lik + beta * (log_prior - log_q)).mean()
        surrogate.backward()
        loss_t = surrogate.item()  # log q at detached parameters has the same value
    else:
        loss, grads = dreg_loss_and_grad(model, x, eps)
        # decoder: the IWAE loss; encoder: -sum_k wtilde_k^2 log w_k, wtilde and q detached
        log_lik, log_prior, log_q = torch_log_weights(model, params_t, x_t, eps_t, act, True)
        log_w = log_lik + log_prior - log_q
        iwae = -(torch.logsumexp(log_w, 0) - np.log(eps.shape[0])).mean()
        w_tilde = torch.softmax(log_w, 0).detach()
        surrogate = -(w_tilde**2 * log_w).sum(0).mean()
        for p, g in zip(decoder, torch.autograd.grad(iwae, decoder, retain_graph=True),
                        strict=True):
            p.grad = g
        for p, g in zip(encoder, torch.autograd.grad(surrogate, encoder), strict=True):
            p.grad = g
        loss_t = iwae.item()
    assert loss == pytest.approx(loss_t, rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(g, params_t[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
