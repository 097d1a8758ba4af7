"""Inference gaps and ELBO surgery (minivae.gaps), checked where the answers are known exactly.

On a linear VAE with a Gaussian likelihood (minivae.theory.network.linear_vae: the decoder
*is* a linear-Gaussian model), log p(x), the posterior and the best diagonal Gaussian q*
are closed forms (minivae.theory.exact.LinearGaussian), so every estimate of
minivae.gaps has an exact target. Statistical tolerances are 4 of the Monte Carlo standard
errors the code itself reports (fixed seeds: a failure is a bug, not bad luck; 4 standard
errors leave a 1-in-16,000 chance per comparison for a correct estimate), and the reported
standard errors are themselves checked: the per-datapoint errors divided by them must have
a spread near 1.
"""

import numpy as np
import pytest

from minivae import VAE, Adam
from minivae.gaps import (
    QOptimizer,
    RowAdam,
    elbo_per_point,
    elbo_surgery,
    inference_gaps,
    log_aggregate_posterior,
    optimize_q,
)
from minivae.gradcheck import directional_check
from minivae.theory.exact import LinearGaussian
from minivae.theory.network import linear_vae
from minivae.theory.questions import surgery_closed_form

Z_TOL = 4.0


def linear_problem(likelihood="gaussian-shared", n=60, seed=1, D=6, Z=3):
    """A linear VAE (identity 18's: the decoder is a linear-Gaussian model, the encoder's
    means a perturbation of the posterior's), with encoder variances e^0.5 times the
    posterior's marginal ones, and n draws of x from the model.

    Why wider: importance sampling with proposal q has weights of finite variance only if
    q's precision is below twice the posterior's (2 Lambda - diag(1/sigma_q^2) positive
    definite); identity 18's encoder, whose variances scatter around the mean-field ones,
    breaks that for most x, and then no standard error of log p(x) means anything (its
    delta-method estimate came out 1.5 times too small). Checked exactly below.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((D, Z))
    b = rng.standard_normal(D)
    noise = rng.uniform(0.1, 0.5, D)
    vae, exact = linear_vae(LinearGaussian(A, b, noise), likelihood, rng)
    vae.params["encoder.0.W"][:, Z:] = 0.0
    vae.params["encoder.0.b"][Z:] = np.log(np.diag(exact.posterior_cov)) + 0.5
    _, x = exact.sample(rng, n)
    q_precision = np.diag(np.exp(-vae.params["encoder.0.b"][Z:]))
    assert np.linalg.eigvalsh(2 * exact.posterior_precision - q_precision).min() > 0
    return vae, exact, x


# ----------------------------------------------------------------------------------------
# the gradient with respect to q's parameters
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-shared", "gaussian-hetero"])
@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_loss_and_q_grad_by_finite_differences(likelihood, kl):
    rng = np.random.default_rng(0)
    model = VAE(5, 3, hidden=(4,), likelihood=likelihood, activation="tanh", seed=2)
    x = ((rng.random((4, 5)) < 0.5).astype(np.float64) if likelihood == "bernoulli"
         else rng.standard_normal((4, 5)))
    eps = rng.standard_normal((3, 4, 3))
    mu0, log_var0 = rng.standard_normal((4, 3)), 0.5 * rng.standard_normal((4, 3))

    def f(theta):
        mu, log_var = theta[:12].reshape(4, 3), theta[12:].reshape(4, 3)
        losses, d_mu, d_log_var = model.loss_and_q_grad(x, mu, log_var, eps, kl=kl)
        return float(np.mean(losses)), np.concatenate([d_mu.ravel(), d_log_var.ravel()])

    theta0 = np.concatenate([mu0.ravel(), log_var0.ravel()])
    assert directional_check(f, theta0, rng, n_directions=4) <= 1e-6


def test_loss_and_q_grad_is_what_loss_and_grad_hands_the_encoder():
    """Same loss; the encoder's gradient is encode_backward of (d_mu, d_log_var); the
    decoder's parameter gradients are not touched (grads=None skips them)."""
    rng = np.random.default_rng(1)
    model = VAE(6, 2, hidden=(5,), likelihood="gaussian-shared", activation="tanh", seed=3)
    x, eps = rng.standard_normal((4, 6)), rng.standard_normal((2, 4, 2))
    loss, grads = model.loss_and_grad(x, eps)
    mu, log_var, cache = model.encode(x)
    losses, d_mu, d_log_var = model.loss_and_q_grad(x, mu, log_var, eps)
    assert np.mean(losses) == loss
    enc = model.new_grad()
    model.encode_backward(d_mu, d_log_var, cache, enc)
    for name in ("encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b"):
        np.testing.assert_array_equal(enc[name], grads[name])
    # datapoint b's own loss depends only on row b: B d_mu[b] is its gradient
    one = model.loss_and_q_grad(x[:1], mu[:1], log_var[:1], eps[:, :1])
    np.testing.assert_allclose(one[1][0], 4 * d_mu[0], rtol=1e-12)


def test_loss_and_q_grad_refuses_bad_q():
    model = VAE(3, 2, hidden=(), likelihood="gaussian-fixed")
    x, eps = np.zeros((2, 3)), np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="mu must have shape"):
        model.loss_and_q_grad(x, np.zeros((2, 3)), np.zeros((2, 2)), eps)
    with pytest.raises(TypeError, match="log_var has dtype float32"):
        model.loss_and_q_grad(x, np.zeros((2, 2)), np.zeros((2, 2), np.float32), eps)
    with pytest.raises(ValueError, match="log_var contains NaN"):
        model.loss_and_q_grad(x, np.zeros((2, 2)), np.full((2, 2), np.nan), eps)


# ----------------------------------------------------------------------------------------
# q*: the optimizer
# ----------------------------------------------------------------------------------------


def test_row_adam_with_equal_rates_is_adam():
    rng = np.random.default_rng(2)
    H = np.diag([3.0, 1.0, 0.2])
    theta0 = rng.standard_normal((4, 3))
    rows, flat = theta0.copy(), theta0.copy().ravel()
    a, b = RowAdam(4, 3, lr=0.05), Adam(lr=0.05)
    for _ in range(200):
        a.step(rows, rows @ H)
        b.step(flat, (flat.reshape(4, 3) @ H).ravel())
    np.testing.assert_allclose(rows.ravel(), flat, rtol=1e-12, atol=1e-15)


def test_optimize_q_finds_the_best_mean_field_gaussian():
    """q* against the exact ELBO optimum (Bishop 10.1.2), measured with the exact ELBO."""
    vae, exact, x = linear_problem()
    local = optimize_q(vae, x, np.random.default_rng(3))
    best = exact.elbo_diag(x, *exact.best_mean_field(x))
    residual = best - exact.elbo_diag(x, local.mu, local.log_var)
    start = best - exact.elbo_diag(x, *vae.encode(x)[:2])
    assert local.converged.all() and local.steps.max() < QOptimizer().max_steps
    assert residual.min() >= -1e-12  # nothing beats the optimum ...
    # ... and q* gets within 1e-3 nats of it on average (from 1.9 nats away), 5e-3 at worst
    assert residual.mean() < 1e-3 and residual.max() < 5e-3, (residual.mean(), residual.max())
    assert start.mean() > 1.0
    np.testing.assert_array_less(local.check_loss, local.initial_check_loss)


def test_optimize_q_stops_by_the_rule_or_by_max_steps():
    vae, _, x = linear_problem(n=5)
    local = optimize_q(vae, x, np.random.default_rng(4),
                       settings=QOptimizer(max_steps=40, check_every=20))
    assert not local.converged.any() and (local.steps == 40).all()
    with pytest.raises(ValueError, match="lr_min must be <= lr"):
        optimize_q(vae, x, np.random.default_rng(4), settings=QOptimizer(lr=1e-3, lr_min=1e-2))


# ----------------------------------------------------------------------------------------
# the gaps, against the exact ones
# ----------------------------------------------------------------------------------------


def _z(estimate, exact_values):
    return (estimate.mean - float(np.mean(exact_values))) / estimate.mc_stderr


@pytest.mark.parametrize("likelihood", ["gaussian-shared", "gaussian-isotropic"])
def test_gaps_reproduce_the_exact_gaps_on_a_linear_vae(likelihood):
    vae, exact, x = linear_problem(likelihood)
    g = inference_gaps(vae, x, np.random.default_rng(5), k=5000, k_elbo=2000, batch_size=40)
    mu, log_var, _ = vae.encode(x)
    log_px = exact.log_marginal(x)
    elbo_q = exact.elbo_diag(x, mu, log_var)
    elbo_opt = exact.elbo_diag(x, *exact.best_mean_field(x))
    # each estimate against the exact value of what it estimates (pure Monte Carlo error);
    # for L[q*] that is the exact ELBO of the q* found, not of the optimum
    q_star = g.q_star
    elbo_found = exact.elbo_diag(x, q_star[0], q_star[1])
    for est, target in ((g.log_marginal, log_px), (g.elbo_q, elbo_q),
                        (g.elbo_q_star, elbo_found), (g.amortization, elbo_found - elbo_q),
                        (g.approximation, log_px - elbo_found)):
        assert abs(_z(est, target)) < Z_TOL, (_z(est, target), est.mean)
        # the per-datapoint standard errors are the right size: of the errors in units of
        # them, a normal 68% fall within 1 and 99% within 2.5. Counts, not the spread: the
        # Monte Carlo means of a skewed log p(x|z) (a quadratic in z here, skewness -2) have
        # occasional 4-sigma outliers that would dominate a standard deviation of 60.
        # Binomial bounds (n = 60): 0.5..0.85 is -2.9..+2.8 sd around 0.68; >= 0.9 is -4 sd.
        z = np.abs(est.values - target) / est.stderr
        assert 0.5 <= np.mean(z < 1) <= 0.85 and np.mean(z < 2.5) >= 0.9, np.sort(z)
    # the gaps against the exact gaps of the exact q*: the optimizer's remaining error
    # (exact, >= 0) is far below the Monte Carlo noise
    residual = float(np.mean(elbo_opt - elbo_found))
    assert 0 <= residual < 0.2 * g.amortization.mc_stderr
    exact_amortization, exact_approximation = elbo_opt - elbo_q, log_px - elbo_opt
    for est, target in ((g.amortization, exact_amortization),
                        (g.approximation, exact_approximation)):
        assert abs(_z(est, target)) < Z_TOL + residual / est.mc_stderr
    # the two gaps are real here (mean-field and a perturbed encoder), far above the noise
    assert np.mean(exact_approximation) > 20 * g.approximation.mc_stderr
    assert np.mean(exact_amortization) > 20 * g.amortization.mc_stderr
    np.testing.assert_allclose(g.inference.values, g.log_marginal.values - g.elbo_q.values,
                               rtol=1e-12, atol=1e-12)


def test_common_samples_make_the_difference_far_less_noisy():
    vae, exact, x = linear_problem(n=30)
    mu, log_var, _ = vae.encode(x)
    near = (mu + 0.01, log_var - 0.01)
    (a, b), (d,) = elbo_per_point(vae, x, [(mu, log_var), near], 500, np.random.default_rng(6))
    assert d.mc_stderr < 0.1 * np.hypot(a.mc_stderr, b.mc_stderr)
    target = exact.elbo_diag(x, *near) - exact.elbo_diag(x, mu, log_var)
    assert abs(_z(d, target)) < Z_TOL


# ----------------------------------------------------------------------------------------
# ELBO surgery
# ----------------------------------------------------------------------------------------


def test_log_aggregate_posterior_is_the_mixture_density():
    rng = np.random.default_rng(7)
    mu, log_var = rng.standard_normal((50, 3)), rng.uniform(-3, 1, (50, 3))
    z = 2 * rng.standard_normal((20, 3))
    per = -0.5 * np.sum(np.log(2 * np.pi) + log_var + (z[:, None] - mu) ** 2 / np.exp(log_var),
                        axis=2)  # (20, 50), directly
    direct = np.log(np.mean(np.exp(per), axis=1))
    np.testing.assert_allclose(log_aggregate_posterior(z, mu, log_var), direct, rtol=1e-12)
    np.testing.assert_allclose(log_aggregate_posterior(z, mu, log_var, chunk=3), direct,
                               rtol=1e-12)


def test_surgery_matches_the_closed_form_on_a_linear_gaussian_model():
    """Identity 15's closed forms (infinite data, x ~ p(x)) against N = 4000 draws of x.

    Each of the N points gives one z (samples=None), so the pairs (x_n, z_n) are draws from
    p(x) q(z|x) and the reported standard error, sd/sqrt(N), covers both the data and the
    Monte Carlo noise. q(z) over N points differs from the infinite-data q(z) by O(e^I / N),
    a few 1e-4 nats here, far below that.
    """
    rng = np.random.default_rng(8)
    D, Z = 5, 2
    model = LinearGaussian(rng.standard_normal((D, Z)), rng.standard_normal(D),
                           rng.uniform(0.2, 0.6, D))
    vae, _ = linear_vae(model, "gaussian-shared", rng)
    vae.params["encoder.0.W"][:, Z:] = 0.0  # log_var independent of x: q(z|x) = N(Wx + c, S_q)
    W, c = vae.params["encoder.0.W"][:, :Z].T, vae.params["encoder.0.b"][:Z]
    S_q = np.diag(np.exp(vae.params["encoder.0.b"][Z:]))
    closed = surgery_closed_form(model, W, c, S_q)
    _, x = model.sample(rng, 4000)
    s = elbo_surgery(vae, x, np.random.default_rng(9), samples=None, batch_size=700)
    assert s.samples == s.n_train == 4000
    assert abs(s.average_kl - closed["average_kl"]) < Z_TOL * s.average_kl_data_stderr
    assert abs(s.mutual_information - closed["mutual_information"]) < Z_TOL * s.stderr
    both = s.stderr + s.average_kl_data_stderr  # marginal_kl = average_kl - I: both errors
    assert abs(s.marginal_kl - closed["marginal_kl"]) < Z_TOL * both
    assert abs(s.marginal_kl_direct - closed["marginal_kl"]) < Z_TOL * s.marginal_kl_direct_stderr
    assert s.max_term <= s.log_n
    assert s.mutual_information + s.marginal_kl == pytest.approx(s.average_kl, rel=1e-12)
    # both parts are well away from 0 here, so the comparison means something
    assert min(closed["mutual_information"], closed["marginal_kl"]) > 10 * s.stderr


def test_surgery_information_is_at_most_log_n_and_a_broken_q_z_is_caught(monkeypatch):
    """A well-separated encoder drives every term of I to log N; an aggregate density that
    misses a datapoint's own Gaussian breaks the bound, and the function says so."""
    rng = np.random.default_rng(10)
    vae = VAE(2, 2, hidden=(), likelihood="gaussian-fixed", seed=1)
    vae.params["encoder.0.W"][...] = np.hstack([40 * np.eye(2), np.zeros((2, 2))])
    vae.params["encoder.0.b"][...] = [0, 0, -6, -6]  # sigma = 0.05, means far apart
    x = rng.standard_normal((200, 2))
    s = elbo_surgery(vae, x, rng, samples=50)
    assert s.samples == 50 and s.max_term <= s.log_n + 1e-9  # equal to log N, to roundoff
    assert s.mutual_information == pytest.approx(np.log(200), abs=0.05)

    import minivae.gaps as gaps

    def missing_own(z, mu, log_var, chunk=None):  # q(z) over every Gaussian but the first
        return log_aggregate_posterior(z, mu[1:], log_var[1:]) + np.log((len(mu) - 1) / len(mu))

    monkeypatch.setattr(gaps, "log_aggregate_posterior", missing_own)
    with pytest.raises(ArithmeticError, match="exceeds log N"):
        elbo_surgery(vae, x, np.random.default_rng(11), samples=None)


# ----------------------------------------------------------------------------------------
# from the command line
# ----------------------------------------------------------------------------------------


def test_evaluate_gaps_and_surgery_from_the_command_line(tmp_path, capsys):
    import json

    from minivae.tool import cli

    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "synthetic", "--hidden", "12", "--latent-dim", "2",
                     "--batch-size", "200", "--train-eval-size", "200", "--epochs", "2",
                     "--no-pictures", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--k", "0", "--n", "100", "--gaps", "--gaps-n", "30",
                     "--gaps-k", "300", "--gaps-k-elbo", "200", "--batch-size", "16",
                     "--surgery", "--surgery-samples", "500"]) == 0
    out = capsys.readouterr().out
    for text in ("approximation gap log p(x) - L[q*]", "amortization gap L[q*] - L[q]",
                 "Monte Carlo", "I(n; z)", "KL(q(z) || p(z))"):
        assert text in out
    record = json.loads((run / "evaluation_test.json").read_text())
    g, s = record["gaps"], record["surgery"]
    assert g["n"] == 30 and g["k"] == 300 and g["k_elbo"] == 200 and g["converged"] == 30
    assert g["inference_gap"]["mean"] == pytest.approx(
        g["approximation_gap"]["mean"] + g["amortization_gap"]["mean"], rel=1e-9)
    for gap in ("approximation_gap", "amortization_gap"):  # >= 0 up to the noise
        assert g[gap]["mean"] > -4 * g[gap]["mc_stderr"]
    assert s["n_train"] == 2000 and s["samples"] == 500 and s["max_term"] <= s["log_n"] + 1e-9
    assert s["mutual_information"] + s["marginal_kl"] == pytest.approx(s["average_kl"])
