"""Tests of minivae.objectives: IWAE bound and gradient, score-function gradient, log p(x).

Ground truth for log p(x) is a linear-Gaussian VAE (affine decoder, Gaussian likelihood
with a fixed or shared variance), whose marginal is computed here independently with
scipy.stats.multivariate_normal.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import VAE, likelihoods
from minivae.gradcheck import model_gradcheck
from minivae.objectives import (
    LogMarginalEstimate,
    importance_sampled_log_marginal,
    iwae_elbo_identity_gap,
    iwae_loss,
    iwae_loss_and_grad,
    log_importance_weights,
    prior_sampling_log_marginal,
    score_function_grad,
)

LIKELIHOODS = sorted(likelihoods.LIKELIHOODS)


def make_data(rng, likelihood, batch, dim, dtype=np.float64):
    if likelihood == "bernoulli":
        return (rng.random((batch, dim)) < 0.5).astype(dtype)
    return rng.standard_normal((batch, dim)).astype(dtype)


def iwae_objective(model, x, eps):
    return iwae_loss_and_grad(model, x, eps)


# ---------------------------------------------------------------------------------------
# Linear-Gaussian ground truth
# ---------------------------------------------------------------------------------------


def linear_gaussian_vae(D=5, Z=2, likelihood="gaussian-fixed", seed=0, q="posterior"):
    """A VAE with affine encoder and decoder: p(x) = N(b, A A^T + Sigma) exactly.

    ``q="posterior"`` sets the affine encoder to the exact posterior mean and a
    variance Z * diag(S) >= S (Cauchy-Schwarz), so that q is broader than p(z|x) in
    every direction and the importance weights are bounded (finite variance).
    ``q="init"`` keeps the random initial encoder.
    """
    model = VAE(D, Z, hidden=(), likelihood=likelihood, seed=seed, fixed_log_var=-1.0)
    rng = np.random.default_rng(seed + 100)
    p = model.params
    p["decoder.0.W"][...] = rng.standard_normal((Z, D))
    p["decoder.0.b"][...] = rng.standard_normal(D)
    if "decoder.log_var" in p:  # a learned noise variance (per dimension or isotropic)
        p["decoder.log_var"][...] = rng.uniform(-1.5, 0.0, size=p["decoder.log_var"].shape)
    if q == "posterior":
        A, b, noise_var = exact_parts(model)
        prec = np.eye(Z) + A.T @ (A / noise_var[:, None])
        S = np.linalg.inv(prec)
        W_mu = (A / noise_var[:, None]) @ S  # mu = (x - b) @ W_mu
        p["encoder.0.W"][...] = 0.0
        p["encoder.0.W"][:, :Z] = W_mu
        p["encoder.0.b"][:Z] = -b @ W_mu
        p["encoder.0.b"][Z:] = np.log(Z * np.diag(S))
    return model


def exact_parts(model):
    A = model.params["decoder.0.W"].T.copy()  # (D, Z): x = A z + b + noise
    b = model.params["decoder.0.b"].copy()
    if "decoder.log_var" in model.params:
        noise_var = np.broadcast_to(np.exp(model.params["decoder.log_var"]), b.shape).copy()
    else:
        noise_var = np.full(model.input_dim, np.exp(model.fixed_log_var))
    return A, b, noise_var


def exact_log_px(model, x):
    A, b, noise_var = exact_parts(model)
    cov = A @ A.T + np.diag(noise_var)
    return scipy.stats.multivariate_normal(mean=b, cov=cov).logpdf(x)


def sample_linear_gaussian(model, rng, n):
    A, b, noise_var = exact_parts(model)
    z = rng.standard_normal((n, model.latent_dim))
    return z @ A.T + b + np.sqrt(noise_var) * rng.standard_normal((n, model.input_dim))


# ---------------------------------------------------------------------------------------
# The IWAE gradient by finite differences
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("K", [1, 2, 5])
@settings(max_examples=3)
@given(
    hidden=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    batch=st.integers(1, 4),
    dims=st.tuples(st.integers(2, 6), st.integers(1, 3)),
    activation=st.sampled_from(["tanh", "relu", "softplus"]),
    seed=st.integers(0, 2**16),
)
def test_iwae_gradient_matches_finite_differences(likelihood, K, hidden, batch, dims,
                                                  activation, seed):
    D, Z = dims
    rng = np.random.default_rng(seed)
    model = VAE(D, Z, hidden=tuple(hidden), likelihood=likelihood, activation=activation,
                seed=seed)
    x = make_data(rng, likelihood, batch, D)
    eps = rng.standard_normal((K, batch, Z))
    errors = model_gradcheck(model, x, eps, rng=rng, objective=iwae_objective)
    assert max(errors.values()) <= 1e-6, errors


def test_iwae_gradient_catches_unnormalized_weights():
    """Power check: the same finite-difference test rejects pitfall 7 (weights not normalized)."""
    rng = np.random.default_rng(0)
    model = VAE(5, 2, hidden=(4,), activation="tanh", seed=3)
    x = make_data(rng, "bernoulli", 3, 5)
    eps = rng.standard_normal((3, 3, 2))

    def wrong(m, x_, eps_):
        # an ELBO gradient (uniform weights 1/K) paired with the IWAE loss
        loss = iwae_loss(m, x_, eps_)
        return loss, m.loss_and_grad(x_, eps_, kl="mc")[1]

    errors = model_gradcheck(model, x, eps, rng=rng, objective=wrong)
    assert errors["all"] > 1e-3


# ---------------------------------------------------------------------------------------
# Identities: L_1 is the MC-KL ELBO; L_K >= L_1
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_l1_equals_elbo_with_mc_kl(likelihood):
    rng = np.random.default_rng(1)
    model = VAE(6, 3, hidden=(5,), likelihood=likelihood, seed=2)
    x = make_data(rng, likelihood, 4, 6)
    eps = rng.standard_normal((1, 4, 3))
    loss_iwae, g_iwae = iwae_loss_and_grad(model, x, eps)
    loss_elbo, g_elbo = model.loss_and_grad(x, eps, kl="mc")
    assert abs(loss_iwae - loss_elbo) <= 1e-12 * max(1.0, abs(loss_elbo))
    np.testing.assert_allclose(g_iwae.flat, g_elbo.flat, rtol=1e-12, atol=1e-14)
    assert iwae_elbo_identity_gap(model, x, rng.standard_normal((5, 4, 3))) <= 1e-12
    # with K samples, the mean of log w is the K-sample MC-KL ELBO
    eps5 = rng.standard_normal((5, 4, 3))
    mc_elbo = -np.mean(log_importance_weights(model, x, eps5))
    assert abs(mc_elbo - model.loss(x, eps5, kl="mc")) <= 1e-12 * max(1.0, abs(mc_elbo))


def test_lk_at_least_elbo_at_same_samples_and_on_average():
    rng = np.random.default_rng(2)
    model = VAE(8, 2, hidden=(6,), seed=4)
    x = make_data(rng, "bernoulli", 5, 8)
    # same samples: log mean w >= mean log w (Jensen), deterministically
    for _ in range(20):
        eps = rng.standard_normal((5, 5, 2))
        assert -iwae_loss(model, x, eps) >= -model.loss(x, eps, kl="mc") - 1e-12
    # independent draws: E[L_5] - E[L_1] > 0 by more than 4 standard errors
    n = 400
    l5 = np.array([-iwae_loss(model, x, rng.standard_normal((5, 5, 2))) for _ in range(n)])
    l1 = np.array([-iwae_loss(model, x, rng.standard_normal((1, 5, 2))) for _ in range(n)])
    diff, se = l5.mean() - l1.mean(), np.sqrt(l5.var(ddof=1) / n + l1.var(ddof=1) / n)
    assert diff > 4 * se, (diff, se)


# ---------------------------------------------------------------------------------------
# Linear-Gaussian: L_K -> log p(x), IS estimate within standard errors
# ---------------------------------------------------------------------------------------


def expected_bound_gaps(model, x, rng, ks, R):
    """log p(x) - E[L_K] (batch mean) and its standard error, E estimated from R draws."""
    exact = float(np.mean(exact_log_px(model, x)))
    gaps, ses = [], []
    for K in ks:
        eps_shape = (K, x.shape[0], model.latent_dim)
        draws = np.array([-iwae_loss(model, x, rng.standard_normal(eps_shape)) for _ in range(R)])
        gaps.append(exact - draws.mean())
        ses.append(draws.std(ddof=1) / np.sqrt(R))
    return np.array(gaps), np.array(ses)


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-shared", "gaussian-isotropic"])
def test_lk_approaches_exact_log_px(likelihood):
    """E[L_K] rises with K to log p(x) and never exceeds it beyond noise.

    q has the exact posterior mean shifted by half a standard deviation and a broadened
    variance, so the ELBO (K=1) is about 1 nat below log p(x); by K=100 the gap must be
    gone to within noise (measured: ~0.004 +- 0.005 nats).
    """
    model = linear_gaussian_vae(D=5, Z=2, likelihood=likelihood, seed=5)
    model.params["encoder.0.b"][:2] += 0.5 * np.exp(0.5 * model.params["encoder.0.b"][2:])
    rng = np.random.default_rng(6)
    x = sample_linear_gaussian(model, rng, 4)
    gaps, ses = expected_bound_gaps(model, x, rng, (1, 10, 100), R=100)
    assert np.all(gaps > -4 * ses), (gaps, ses)  # a bound: never above log p(x)
    assert gaps[0] > 0.5 and gaps[1] < 0.2 * gaps[0], gaps
    assert gaps[2] < 0.02 + 4 * ses[2], (gaps, ses)


def test_lk_increases_monotonically_with_a_poor_encoder():
    """With the random initial encoder the gaps are large (tens of nats) and shrink with K."""
    model = linear_gaussian_vae(D=5, Z=2, seed=5, q="init")
    rng = np.random.default_rng(6)
    x = sample_linear_gaussian(model, rng, 4)
    gaps, ses = expected_bound_gaps(model, x, rng, (1, 10, 100), R=100)
    assert np.all(gaps > -4 * ses), (gaps, ses)
    assert np.all(np.diff(gaps) < -4 * np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)), (gaps, ses)
    assert gaps[2] < 0.25 * gaps[0], gaps


@pytest.mark.parametrize("likelihood", ["gaussian-fixed", "gaussian-shared", "gaussian-isotropic"])
def test_importance_sampling_matches_exact_log_px(likelihood):
    model = linear_gaussian_vae(D=6, Z=2, likelihood=likelihood, seed=7)
    rng = np.random.default_rng(8)
    x = sample_linear_gaussian(model, rng, 6)
    exact = exact_log_px(model, x)
    est = importance_sampled_log_marginal(model, x, k=5000, rng=rng, chunk_size=1024)
    assert isinstance(est, LogMarginalEstimate)
    assert est.values.shape == est.stderr.shape == (6,)
    assert np.all(np.abs(est.values - exact) <= 4 * est.stderr), (est.values - exact, est.stderr)
    assert abs(est.mean - exact.mean()) <= 4 * est.mean_stderr
    # not above the truth beyond statistical error
    assert np.all(est.values <= exact + 4 * est.stderr)
    # and above the ELBO (estimated with many samples and the closed-form KL)
    elbo = -np.array([model.loss(x[i : i + 1], model.sample_eps(rng, 1, 2000)) for i in range(6)])
    assert np.all(est.values > elbo)


def test_importance_sampling_stderr_is_calibrated():
    """The delta-method standard error matches the spread of repeated estimates."""
    model = linear_gaussian_vae(D=5, Z=2, seed=9)
    rng = np.random.default_rng(10)
    x = sample_linear_gaussian(model, rng, 3)
    reps = [importance_sampled_log_marginal(model, x, k=200, rng=rng) for _ in range(300)]
    empirical = np.std([r.values for r in reps], axis=0, ddof=1)
    reported = np.mean([r.stderr for r in reps], axis=0)
    # 300 repeats: the empirical sd is within about +-10% of the truth (sd/sqrt(2*299) ~ 4%)
    np.testing.assert_allclose(reported, empirical, rtol=0.2)


def test_prior_sampling_estimate_is_consistent_but_noisier():
    model = linear_gaussian_vae(D=4, Z=2, seed=11)
    rng = np.random.default_rng(12)
    x = sample_linear_gaussian(model, rng, 4)
    exact = exact_log_px(model, x)
    prior = prior_sampling_log_marginal(model, x, 20000, rng)
    assert np.all(np.abs(prior.values - exact) <= 5 * prior.stderr), (prior.values - exact,
                                                                       prior.stderr)
    importance = importance_sampled_log_marginal(model, x, k=20000, rng=rng)
    assert np.all(importance.stderr < prior.stderr)


def test_is_estimate_at_least_elbo_at_same_samples():
    """With the same noise, log mean w >= mean log w: IS estimate >= MC-ELBO estimate."""
    model = VAE(8, 3, hidden=(6,), seed=13)
    rng = np.random.default_rng(14)
    x = make_data(rng, "bernoulli", 5, 8)
    est = importance_sampled_log_marginal(model, x, k=300, rng=np.random.default_rng(3))
    eps = model.sample_eps(np.random.default_rng(3), 5, 300)  # the same stream
    elbo = np.mean(log_importance_weights(model, x, eps), axis=0)
    assert np.all(est.values >= elbo)


# ---------------------------------------------------------------------------------------
# Chunking, rng handling, dtype
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [importance_sampled_log_marginal,
                                       prior_sampling_log_marginal])
def test_chunked_equals_unchunked(estimator):
    model = VAE(7, 2, hidden=(5,), seed=15)
    x = make_data(np.random.default_rng(16), "bernoulli", 3, 7)
    whole = estimator(model, x, 1000, np.random.default_rng(4), chunk_size=1000)
    for chunk in (1, 7, 333, None):
        part = estimator(model, x, 1000, np.random.default_rng(4), chunk_size=chunk)
        np.testing.assert_allclose(part.values, whole.values, rtol=1e-12)
        np.testing.assert_allclose(part.stderr, whole.stderr, rtol=1e-8)


def test_default_rng_is_fixed_seed_and_global_state_untouched():
    model = VAE(5, 2, hidden=(4,), seed=17)
    x = make_data(np.random.default_rng(18), "bernoulli", 2, 5)
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (checking it is untouched)
    a = importance_sampled_log_marginal(model, x, k=100)
    b = importance_sampled_log_marginal(model, x, k=100, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_float32_model_keeps_its_dtype():
    model = VAE(6, 2, hidden=(5,), dtype=np.float32, seed=19)
    rng = np.random.default_rng(20)
    x = make_data(rng, "bernoulli", 3, 6, np.float32)
    eps = model.sample_eps(rng, 3, 4)
    loss, grads = iwae_loss_and_grad(model, x, eps)
    assert grads.flat.dtype == np.float32 and np.isfinite(loss)
    _, grads = score_function_grad(model, x, eps, baseline="leave-one-out")
    assert grads.flat.dtype == np.float32
    est = importance_sampled_log_marginal(model, x, k=50, rng=rng)
    assert est.values.dtype == np.float64  # reported statistics are accumulated in float64
    assert np.all(np.isfinite(est.values))


# ---------------------------------------------------------------------------------------
# Score-function estimator
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kl", ["analytic", "mc"])
@pytest.mark.parametrize("baseline", ["none", "batch-mean", "leave-one-out"])
def test_score_function_mean_matches_reparameterized_gradient(kl, baseline):
    """Both estimators are unbiased for the same gradient, so their means agree.

    Tolerance: with R independent replicate estimates per estimator, the difference of
    the two sample means, coordinate by coordinate, has standard error
    se = sqrt(var_sf / R + var_rep / R). Under the null (both unbiased) each standardized
    difference is ~N(0, 1) by the CLT; with P ~ 40 encoder coordinates a 5-sigma bound
    has a family-wise false-alarm rate below P * 6e-7 ~ 2e-5 (and the seeds are fixed,
    so the test is deterministic). The last assert checks the bound has power: it is a
    small fraction of the gradient's size, so a factor-of-two bug would fail.
    """
    model = VAE(5, 2, hidden=(4,), activation="tanh", seed=21)
    rng = np.random.default_rng(22)
    x = make_data(rng, "bernoulli", 3, 5)
    R, K = 1500, 10
    enc = np.zeros(model.n_params, dtype=bool)
    for name, sl in model.params.slices().items():
        enc[sl] = name.startswith("encoder")
    rep = np.array([model.loss_and_grad(x, model.sample_eps(rng, 3, K), kl=kl)[1].flat
                    for _ in range(R)])
    sf = np.array([score_function_grad(model, x, model.sample_eps(rng, 3, K), kl=kl,
                                       baseline=baseline)[1].flat for _ in range(R)])
    diff = sf.mean(0) - rep.mean(0)
    se = np.sqrt(sf.var(0, ddof=1) / R + rep.var(0, ddof=1) / R)
    assert np.all(np.abs(diff[enc]) <= 5 * se[enc]), np.max(np.abs(diff[enc]) / se[enc])
    # decoder entries are the same direct gradient in both: equal given the same noise
    eps = model.sample_eps(rng, 3, K)
    np.testing.assert_allclose(score_function_grad(model, x, eps, kl=kl)[1].flat[~enc],
                               model.loss_and_grad(x, eps, kl=kl)[1].flat[~enc], rtol=1e-12)
    # power: on the larger half of the coordinates the tolerance is below the gradient
    # itself (a dropped or doubled term moves the mean by about |g|), and typically far below
    mean_grad = np.abs(rep.mean(0)[enc])
    big = mean_grad > np.quantile(mean_grad, 0.5)
    ratio = 5 * se[enc][big] / mean_grad[big]
    assert np.all(ratio < 1.0) and np.median(ratio) < 0.4, ratio


def reference_baseline(f, kind):
    """Baselines written out with loops, independently of the library's vectorized ones."""
    K, B = f.shape
    c = np.zeros_like(f)
    for k in range(K):
        for b in range(B):
            if kind == "leave-one-out":
                c[k, b] = np.mean([f[j, b] for j in range(K) if j != k])
            elif kind == "batch-mean":
                c[k, b] = np.mean([f[j, a] for j in range(K) for a in range(B) if (j, a) != (k, b)])
    return c


@pytest.mark.parametrize("kl", ["analytic", "mc"])
@pytest.mark.parametrize("baseline", ["none", "batch-mean", "leave-one-out"])
def test_score_function_is_the_gradient_of_its_surrogate(kl, baseline):
    """Exact (not statistical) check of the score-function estimator, baseline included.

    With the samples z_kb frozen (drawn once at the current parameters) and the
    coefficients f - c frozen too, the estimator is the gradient of the surrogate

        S = -1/(KB) sum_kb [(f - c)_kb log q_phi(z_kb|x_b) + log p_theta(x_b|z_kb)]
            + (1/B) sum_b KL(q_phi(z|x_b) || p(z))                     (kl="analytic")
        S = -1/(KB) sum_kb [(f - c)_kb log q_phi(z_kb|x_b) + log p_theta(x_b|z_kb)
                            + log p(z_kb) - log q_phi(z_kb|x_b)]        (kl="mc")

    whose last term is the direct term. Finite differences of S must match it to 1e-6.
    """
    from minivae.distributions import gaussian_log_prob, kl_diag_standard_normal

    model = VAE(5, 2, hidden=(4,), activation="tanh", seed=27)
    rng = np.random.default_rng(28)
    x = make_data(rng, "bernoulli", 3, 5)
    eps = rng.standard_normal((4, 3, 2))
    mu, log_var, _ = model.encode(x)
    z = mu + np.exp(0.5 * log_var) * eps  # frozen samples
    log_px = model.log_lik(x, model.decode(z)[0])
    log_w = log_px - 0.5 * np.sum(z * z + np.log(2 * np.pi), -1) - gaussian_log_prob(z, mu, log_var)
    f = log_px if kl == "analytic" else log_w
    coef = f - reference_baseline(f, baseline)  # frozen
    K, B = f.shape

    def surrogate(m, x_, eps_):
        mu_, log_var_, _ = m.encode(x_)
        log_q = gaussian_log_prob(z, mu_, log_var_)
        log_p = m.log_lik(x_, m.decode(z)[0])
        value = -np.sum(coef * log_q + log_p) / (K * B)
        if kl == "analytic":
            value += np.mean(kl_diag_standard_normal(mu_, log_var_))
        else:
            value -= np.sum(-0.5 * np.sum(z * z + np.log(2 * np.pi), -1) - log_q) / (K * B)
        return float(value), score_function_grad(m, x_, eps_, kl=kl, baseline=baseline)[1]

    errors = model_gradcheck(model, x, eps, rng=rng, objective=surrogate)
    assert max(errors.values()) <= 1e-6, errors


def test_score_function_loss_is_the_elbo_and_baseline_reduces_variance():
    model = VAE(5, 2, hidden=(4,), seed=23)
    rng = np.random.default_rng(24)
    x = make_data(rng, "bernoulli", 3, 5)
    eps = model.sample_eps(rng, 3, 4)
    for kl in ("analytic", "mc"):
        assert score_function_grad(model, x, eps, kl=kl)[0] == pytest.approx(
            model.loss(x, eps, kl=kl), rel=1e-12)
    var = {}
    for baseline in ("none", "leave-one-out"):
        g = np.array([score_function_grad(model, x, model.sample_eps(rng, 3, 10),
                                          baseline=baseline)[1].flat for _ in range(300)])
        var[baseline] = g.var(0).mean()
    assert var["leave-one-out"] < var["none"]


# ---------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = VAE(5, 2, hidden=(4,), seed=25)
    rng = np.random.default_rng(26)
    x = make_data(rng, "bernoulli", 3, 5)
    eps = model.sample_eps(rng, 3, 2)
    with pytest.raises(TypeError, match="dtype"):
        iwae_loss_and_grad(model, x.astype(np.float32), eps)
    with pytest.raises(ValueError, match="eps must have shape"):
        iwae_loss_and_grad(model, x, eps[:, :2])
    with pytest.raises(TypeError, match="model must be a minivae.VAE"):
        iwae_loss_and_grad("model", x, eps)
    with pytest.raises(ValueError, match="baseline must be one of"):
        score_function_grad(model, x, eps, baseline="mean")
    with pytest.raises(ValueError, match="kl must be one of"):
        score_function_grad(model, x, eps, kl="closed")
    with pytest.raises(ValueError, match="leave-one-out.*K >= 2"):
        score_function_grad(model, x, eps[:1], baseline="leave-one-out")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        importance_sampled_log_marginal(model, x, k=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        importance_sampled_log_marginal(model, x, k=10.5)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        importance_sampled_log_marginal(model, x, k=10, chunk_size=0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        importance_sampled_log_marginal(model, x, k=10, rng=42)
    with pytest.raises(ValueError, match="x must have shape"):
        prior_sampling_log_marginal(model, x[:, :3], 10, rng)


# ---------------------------------------------------------------------------------------
# The measurement script runs end to end (tiny settings)
# ---------------------------------------------------------------------------------------


def test_estimator_variance_script_runs(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "estimator_variance.py"
    spec = importlib.util.spec_from_file_location("estimator_variance", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "v.json"
    assert module.main(["--epochs", "1", "--n-train", "200", "--batch", "4", "--ks", "1", "2",
                        "--replicates", "5", "--hidden", "8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nats^2" in text and "leave-one-out" in text
    results = json.loads(out.read_text())["results"]
    assert results["score fn (MC KL), leave-one-out baseline"]["1"] is None
    assert results["reparam, closed-form KL"]["2"]["encoder W"] > 0
    with pytest.raises(FileNotFoundError, match="binarized_mnist.npz"):
        module.main(["--data-dir", str(tmp_path)])


def test_iwae_out_buffer_is_overwritten_not_accumulated():
    rng = np.random.default_rng(0)
    model = VAE(5, 2, hidden=(4,), seed=1)
    x = make_data(rng, "bernoulli", 3, 5)
    eps = rng.standard_normal((4, 3, 2))
    _, fresh = iwae_loss_and_grad(model, x, eps)
    buf = model.new_grad()
    buf.flat[:] = 7.0
    _, reused = iwae_loss_and_grad(model, x, eps, out=buf)
    assert reused is buf
    np.testing.assert_array_equal(reused.flat, fresh.flat)
    with pytest.raises(TypeError, match="out must be a ParamDict"):
        iwae_loss_and_grad(model, x, eps, out=np.zeros(model.n_params))
