"""PyTorch as an independent oracle (skipped when torch is not installed).

The same model is rebuilt in torch (float64) from minivae's weights, fed the
same eps, and its loss is written with torch's own distributions
(``torch.distributions.Normal``/``Bernoulli`` and ``kl_divergence``), so the
comparison shares no code with minivae. Loss and every gradient must agree to
1e-10 relative.
"""

import itertools

import numpy as np
import pytest

from minivae import VAE
from minivae.layers import ACTIVATIONS
from minivae.likelihoods import LIKELIHOODS

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
    Z, Dx = model.latent_dim, model.input_dim
    enc = mlp(params, "encoder", model.encoder.n_layers, x, act)
    mu, log_var = enc[:, :Z], enc[:, Z:]
    std = torch.exp(0.5 * log_var)
    q = D.Normal(mu, std)
    z = mu + std * eps  # (K, B, Z)
    out = mlp(params, "decoder", model.decoder.n_layers, z, act)
    if model.likelihood_name == "bernoulli":
        px = D.Bernoulli(logits=out)
    elif model.likelihood_name == "gaussian-hetero":
        px = D.Normal(out[..., :Dx], torch.exp(0.5 * out[..., Dx:]))
    elif model.likelihood_name in ("gaussian-shared", "gaussian-isotropic"):
        px = D.Normal(out, torch.exp(0.5 * params["decoder.log_var"]))
    else:
        px = D.Normal(out, torch.exp(torch.tensor(0.5 * model.fixed_log_var, dtype=x.dtype)))
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
