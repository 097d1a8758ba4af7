"""The STL and DReG gradient estimators (minivae.objectives), checked three ways.

1. Exactly, by finite differences (float64, 1e-6 relative) of the surrogate each one
   differentiates, written here from the model's primitives (encode, decode, log_lik,
   Gaussian log-densities), not from the estimators' code:

   * STL: the Monte Carlo negative ELBO with the parameters inside log q held at their
     current value phi0: -(1/KB) sum [log p(x|z(phi)) + beta (log p(z(phi)) - log q_phi0(z(phi)))];
   * DReG: the IWAE loss with z frozen (its decoder gradient) plus, for the encoder,
     -(1/B) sum wtilde^2 log w(z(phi)) with wtilde, the decoder and log q's phi held fixed.

2. Statistically: each averages to the gradient it replaces (paired differences with the
   pathwise estimator at the same eps, within 5 standard errors per component), and STL is
   exactly zero at the exact posterior of a linear VAE whose posterior is diagonal.
3. Against PyTorch with ``.detach()`` in tests/test_torch_oracle.py (1e-10 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from minivae import VAE, likelihoods
from minivae.distributions import gaussian_log_prob, standard_normal_log_prob
from minivae.gradcheck import model_gradcheck
from minivae.numerics import logmeanexp
from minivae.objectives import (
    ESTIMATORS,
    check_estimator,
    dreg_loss_and_grad,
    iwae_loss_and_grad,
    stl_loss_and_grad,
)
from minivae.tool import cli
from minivae.tool.train import TrainConfig, make_objective

LIKELIHOODS = sorted(likelihoods.LIKELIHOODS)
Z_TOL_TESTS = 5.0  # chance failure < 6e-7 per compared component


def make_case(likelihood, seed, D=5, Z=2, hidden=(4,), B=3, K=4, activation="tanh"):
    rng = np.random.default_rng(seed)
    model = VAE(D, Z, hidden=hidden, likelihood=likelihood, activation=activation, seed=seed,
                fixed_log_var=-0.3)
    if "decoder.log_var" in model.params:
        model.params["decoder.log_var"][...] = rng.uniform(-1, 1, model.params["decoder.log_var"]
                                                           .shape)
    if likelihood == "bernoulli":
        x = (rng.random((B, D)) < 0.5).astype(np.float64)
    else:
        x = rng.standard_normal((B, D))
    return model, x, rng.standard_normal((K, B, Z)), rng


def _log_w(decoder_model, x, z, mu0, log_var0):
    """log p(x|z) + log p(z) - log q_phi0(z): q's parameters are the frozen (mu0, log_var0)."""
    return (decoder_model.log_lik(x, decoder_model.decode(z)[0]) + standard_normal_log_prob(z)
            - gaussian_log_prob(z, mu0, log_var0))


def stl_surrogate(model, x, eps, beta, estimator=stl_loss_and_grad):
    mu0, log_var0, _ = model.encode(x)

    def objective(m, x_, eps_):
        mu, log_var, _ = m.encode(x_)
        z = mu + np.exp(0.5 * log_var) * eps_
        log_lik = m.log_lik(x_, m.decode(z)[0])
        kl = gaussian_log_prob(z, mu0, log_var0) - standard_normal_log_prob(z)
        value = -np.mean(log_lik - beta * kl)
        return float(value), estimator(m, x_, eps_, beta=beta)[1]
    return objective


def dreg_surrogate(model, x, eps, estimator=dreg_loss_and_grad):
    mu0, log_var0, _ = model.encode(x)
    z0 = mu0 + np.exp(0.5 * log_var0) * eps
    frozen = VAE.from_config(model.config())  # the decoder at theta0
    frozen.set_flat(model.get_flat())
    log_w0 = _log_w(frozen, x, z0, mu0, log_var0)
    w_tilde = np.exp(log_w0 - logmeanexp(log_w0, axis=0)) / eps.shape[0]  # frozen
    B = x.shape[0]

    def objective(m, x_, eps_):
        decoder_part = -np.mean(logmeanexp(_log_w(m, x_, z0, mu0, log_var0), axis=0))
        mu, log_var, _ = m.encode(x_)
        z = mu + np.exp(0.5 * log_var) * eps_
        encoder_part = -np.sum(w_tilde**2 * _log_w(frozen, x_, z, mu0, log_var0)) / B
        return float(decoder_part + encoder_part), estimator(m, x_, eps_)[1]
    return objective


# ---------------------------------------------------------------------------------------
# 1. exact: finite differences of the surrogate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_gradient_of_its_surrogate(likelihood, estimator):
    seed = LIKELIHOODS.index(likelihood) + 10 * (estimator == "dreg")
    activation = ("tanh", "softplus", "relu")[seed % 3]
    hidden = ((4,), (3, 5), ())[seed % 3]
    model, x, eps, rng = make_case(likelihood, seed, hidden=hidden, activation=activation)
    objective = (stl_surrogate(model, x, eps, beta=0.7) if estimator == "stl"
                 else dreg_surrogate(model, x, eps))
    errors = model_gradcheck(model, x, eps, rng=rng, objective=objective)
    assert max(errors.values()) <= 1e-6, errors


def test_finite_differences_catch_planted_bugs():
    """Power check: the same tests reject DReG with wtilde instead of wtilde^2 (the IWAE
    weights), and STL that keeps the score term (the plain pathwise gradient)."""
    model, x, eps, rng = make_case("bernoulli", 3)

    def dreg_with_iwae_weights(m, x_, eps_):
        return iwae_loss_and_grad(m, x_, eps_)  # sum wtilde dlog w/dphi: score term included

    errors = model_gradcheck(model, x, eps, rng=rng,
                             objective=dreg_surrogate(model, x, eps, dreg_with_iwae_weights))
    assert errors["encoder.0.W"] > 1e-3 and errors["decoder.0.W"] < 1e-6

    def stl_with_score_term(m, x_, eps_, beta):
        return m.loss_and_grad(x_, eps_, kl="mc", beta=beta)

    errors = model_gradcheck(model, x, eps, rng=rng,
                             objective=stl_surrogate(model, x, eps, 1.0, stl_with_score_term))
    assert errors["encoder.0.b"] > 1e-3 and errors["decoder.0.W"] < 1e-6


def test_losses_and_k1_agree_with_the_objectives_they_estimate():
    for likelihood in LIKELIHOODS:
        model, x, eps, _ = make_case(likelihood, 5)
        assert stl_loss_and_grad(model, x, eps, beta=0.6)[0] == pytest.approx(
            model.loss(x, eps, kl="mc", beta=0.6), rel=1e-13)
        loss, grads = dreg_loss_and_grad(model, x, eps)
        iwae_loss, iwae_grads = iwae_loss_and_grad(model, x, eps)
        assert loss == iwae_loss
        for name, g in grads.items():  # the decoder's gradient is IWAE's, bit for bit
            if name.startswith("decoder"):
                np.testing.assert_array_equal(g, iwae_grads[name])
        # at K = 1 the normalized weight is 1: DReG is STL
        _, g_dreg = dreg_loss_and_grad(model, x, eps[:1])
        _, g_stl = stl_loss_and_grad(model, x, eps[:1])
        np.testing.assert_allclose(g_dreg.flat, g_stl.flat, rtol=1e-13, atol=1e-15)


def test_out_buffer_is_overwritten_and_float32_kept():
    model, x, eps, _ = make_case("gaussian-shared", 7)
    for estimator in (stl_loss_and_grad, dreg_loss_and_grad):
        fresh = estimator(model, x, eps)[1].flat.copy()
        buf = model.new_grad()
        buf.flat[...] = np.nan
        assert estimator(model, x, eps, out=buf)[1] is buf
        np.testing.assert_array_equal(buf.flat, fresh)
    m32 = VAE(5, 2, hidden=(4,), dtype=np.float32, seed=1)
    x32 = (np.random.default_rng(0).random((3, 5)) < 0.5).astype(np.float32)
    e32 = m32.sample_eps(np.random.default_rng(1), 3, 4)
    for estimator in (stl_loss_and_grad, dreg_loss_and_grad):
        assert estimator(m32, x32, e32)[1].flat.dtype == np.float32


# ---------------------------------------------------------------------------------------
# 2. statistical: unbiased for the gradient they replace; STL sticks the landing
# ---------------------------------------------------------------------------------------


def _paired_max_z(a, b):
    """Largest |mean(a - b)| / stderr over the components that differ at all."""
    d = np.asarray(a) - np.asarray(b)
    mean, se = d.mean(axis=0), d.std(axis=0, ddof=1) / np.sqrt(len(d))
    moving = se > 0
    return float(np.max(np.abs(mean[moving]) / se[moving]))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-hetero"])
def test_stl_and_dreg_average_to_the_pathwise_gradient(likelihood):
    """Dropping a zero-mean score term keeps the mean. One datapoint, copied into a batch of
    200, gives per call the average of 200 independent draws; 40 calls give 40 such group
    means per estimator, from the same eps for both members of a pair. Their paired
    differences must be within 5 standard errors of 0 in every encoder component that varies
    (t with 39 degrees of freedom: chance failure about 1e-5 per component)."""
    model, x, _, rng = make_case(likelihood, 11, D=4, hidden=(3,), B=1)
    xs = np.repeat(x, 200, axis=0)
    enc = slice(0, model.params.slices()["decoder.0.W"].start)
    stl, path, dreg, iwae = [], [], [], []
    for _ in range(40):
        e1 = rng.standard_normal((1, 200, 2))
        stl.append(stl_loss_and_grad(model, xs, e1)[1].flat[enc].copy())
        path.append(model.loss_and_grad(xs, e1, kl="mc")[1].flat[enc].copy())
        e5 = rng.standard_normal((5, 200, 2))
        dreg.append(dreg_loss_and_grad(model, xs, e5)[1].flat[enc].copy())
        iwae.append(iwae_loss_and_grad(model, xs, e5)[1].flat[enc].copy())
    assert np.max(np.abs(np.array(stl) - np.array(path))) > 1e-3  # they differ draw by draw
    assert _paired_max_z(stl, path) < Z_TOL_TESTS
    assert _paired_max_z(dreg, iwae) < Z_TOL_TESTS


def posterior_encoder_linear_vae(likelihood, seed, D=5, Z=2):
    """A linear VAE whose posterior is diagonal (A^T Sigma^-1 A diagonal: orthogonal columns,
    isotropic noise) and whose affine encoder *is* that posterior: q(z|x) = p(z|x)."""
    rng = np.random.default_rng(seed)
    model = VAE(D, Z, hidden=(), likelihood=likelihood, seed=seed, fixed_log_var=-0.5)
    noise_var = 0.6 if "decoder.log_var" in model.params else np.exp(-0.5)
    if "decoder.log_var" in model.params:
        model.params["decoder.log_var"][...] = np.log(noise_var)
    Q, _ = np.linalg.qr(rng.standard_normal((D, Z)))
    A = Q * rng.uniform(0.5, 2.0, Z)  # (D, Z), A^T A diagonal
    b = rng.standard_normal(D)
    lam = 1.0 + np.sum(A * A, axis=0) / noise_var  # the diagonal posterior precision
    W_mu = A / noise_var / lam  # mu = (x - b) @ W_mu
    p = model.params
    p["decoder.0.W"][...], p["decoder.0.b"][...] = A.T, b
    p["encoder.0.W"][...] = 0.0
    p["encoder.0.W"][:, :Z] = W_mu
    p["encoder.0.b"][:Z] = -b @ W_mu
    p["encoder.0.b"][Z:] = -np.log(lam)
    x = b + rng.standard_normal((3, D)) @ (A @ A.T + noise_var * np.eye(D))
    return model, x, rng


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-shared",
                                        "gaussian-isotropic"])
def test_stl_is_exactly_zero_at_the_posterior(likelihood):
    """log p(x,z) - log q(z|x) = log p(x) for every z when q = p(z|x): the path term is 0."""
    model, x, rng = posterior_encoder_linear_vae(likelihood, 4)
    eps = rng.standard_normal((6, 3, 2))
    _, stl = stl_loss_and_grad(model, x, eps)
    _, path = model.loss_and_grad(x, eps, kl="mc")
    _, dreg = dreg_loss_and_grad(model, x, eps)
    for name in ("encoder.0.W", "encoder.0.b"):
        assert np.max(np.abs(stl[name])) < 1e-12 * np.max(np.abs(path[name])) + 1e-13
        assert np.max(np.abs(dreg[name])) < 1e-12 * np.max(np.abs(path[name])) + 1e-13
        assert np.max(np.abs(path[name])) > 1e-2  # the pathwise estimate is not zero
    # the log weights are all log p(x): the bound is tight at the posterior
    log_w = -np.array([model.loss(x[b:b + 1], eps[:, b:b + 1], kl="mc") for b in range(3)])
    np.testing.assert_allclose(-stl_loss_and_grad(model, x, eps)[0], np.mean(log_w),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------
# which estimator fits which objective, in the library and in `train`
# ---------------------------------------------------------------------------------------


def test_invalid_combinations_are_refused_by_name(tmp_path, capsys):
    assert ESTIMATORS == ("pathwise", "stl", "dreg")
    assert check_estimator("elbo", "stl", "mc") == "stl"
    assert check_estimator("iwae", "dreg") == "dreg"
    for objective in ("elbo", "iwae"):
        for kl in ("analytic", "mc"):
            assert check_estimator(objective, "pathwise", kl) == "pathwise"
    with pytest.raises(ValueError, match="estimator 'stl' drops the score term.*kl 'mc'"):
        check_estimator("elbo", "stl", "analytic")
    with pytest.raises(ValueError, match="'stl'.*biased.*'dreg'"):
        check_estimator("iwae", "stl", "mc")
    with pytest.raises(ValueError, match="'dreg'.*objective 'iwae'"):
        check_estimator("elbo", "dreg", "analytic")
    with pytest.raises(ValueError, match="estimator must be one of"):
        check_estimator("elbo", "rws")
    with pytest.raises(ValueError, match="'dreg'.*objective 'iwae'"):
        TrainConfig(estimator="dreg").validate()
    with pytest.raises(ValueError, match="kl 'mc'"):
        make_objective(VAE(4, 2, hidden=()), estimator="stl")
    assert cli.main(["train", "--dataset", "synthetic", "--estimator", "stl",
                     "--run-dir", str(tmp_path / "r")]) == 2
    assert "needs the Monte Carlo KL" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args", [["--objective", "iwae", "--k", "3", "--estimator", "dreg"],
                                  ["--kl", "mc", "--k", "2", "--estimator", "stl"]])
def test_train_with_each_estimator(tmp_path, capsys, args):
    run = tmp_path / "r"
    assert cli.main(["train", "--dataset", "synthetic", "--hidden", "12", "--latent-dim", "2",
                     "--batch-size", "200", "--train-eval-size", "200", "--epochs", "1",
                     "--no-pictures", "--run-dir", str(run), *args]) == 0
    assert "epoch   1/1" in capsys.readouterr().out
    assert f'"estimator": "{args[-1]}"' in (run / "config.json").read_text()
