"""Identities 13-18 hold on random models, fail with a planted bug, and draw their pictures.

As in test_identities.py: hypothesis draws random problems; closed forms hold to 1e-9
relative (18: 1e-10); Monte Carlo comparisons pass within ``Z_TOL_TESTS = 5`` standard
errors (chance failure < 6e-7 per compared number), with reduced sample sizes.
"""

import builtins
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minivae.vae
from minivae.theory import questions
from minivae.theory.exact import LinearGaussian
from minivae.theory.identities import IDENTITIES, default_problem, make_problem, run_all
from minivae.theory.network import linear_vae, network_elbo_is_exact, sigma_points
from minivae.theory.plots import PLOTS, write_plots
from minivae.theory.questions import (
    elbo_surgery,
    estimator_variances,
    iwae_snr_and_dreg,
    kl_direction,
    minimize,
    prior_or_posterior,
    sticking_the_landing,
)
from minivae.tool.cli import main

Z_TOL_TESTS = 5.0

problems = st.builds(
    lambda seed, D, Z, full: make_problem(np.random.default_rng(seed), D, Z, 3, full),
    st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.booleans(),
)
seeds = st.integers(0, 2**32 - 1)


def _ok(result):
    assert result.passed, (result.name, result.lhs, result.rhs, result.difference,
                           {k: v for k, v in result.details.items() if not isinstance(v, dict)})


# --------------------------------------------------------------------------
# 13: KL direction
# --------------------------------------------------------------------------


@given(problems, seeds)
def test_13_kl_direction(problem, seed):
    r = kl_direction(problem, np.random.default_rng(seed), n_quad=60)
    _ok(r)
    d = r.details
    assert np.all(d["reverse_q_var"] <= d["forward_q_var"] * (1 + 1e-9))
    # each optimum is best in its own direction
    kls = d["kls"]  # (equal, up to roundoff, when Z = 1 or the target is uncorrelated)
    assert kls["reverse_optimum"]["reverse_kl"] <= kls["forward_optimum"]["reverse_kl"] + 1e-12
    assert kls["forward_optimum"]["forward_kl"] <= kls["reverse_optimum"]["forward_kl"] + 1e-12


def test_minimizer_reaches_the_gradients_precision():
    # a narrow, tilted valley (condition number 1e4), from far away
    H = np.array([[1e4, 30.0], [30.0, 1.0]])
    b = np.array([1.0, -2.0])
    x, g = minimize(lambda x: 0.5 * x @ H @ x - b @ x, lambda x: H @ x - b, [50.0, -80.0])
    np.testing.assert_allclose(x, np.linalg.solve(H, b), rtol=1e-12)
    assert g < 1e-11


def test_13_planted_bugs(monkeypatch):
    problem = default_problem(0)
    rng = np.random.default_rng
    assert kl_direction(problem, rng(1)).passed

    # the two directions swapped: "reverse" KL computed as KL(p || q)
    def swapped(mu, log_var, m, precision):
        return questions.forward_kl_diag(mu, log_var, m, np.linalg.inv(precision))

    with monkeypatch.context() as mp:
        mp.setattr(questions, "reverse_kl_diag", swapped)
        assert not kl_direction(problem, rng(1)).passed

    # a mixture's variance without its between-component spread
    def within_only(weights, means, sds):
        return float(weights @ means), float(weights @ sds**2)

    with monkeypatch.context() as mp:
        mp.setattr(questions, "mixture_moments", within_only)
        assert not kl_direction(problem, rng(1)).passed


# --------------------------------------------------------------------------
# 14: prior or posterior
# --------------------------------------------------------------------------


@given(problems)
def test_14_prior_or_posterior(problem):
    r = prior_or_posterior(problem, np.random.default_rng(0))
    _ok(r)
    path = r.details["full_path"]
    assert path["kl_to_prior"][0] == 0.0  # it starts at the prior
    assert path["kl_to_posterior"][-1] < 1e-9 * max(1.0, path["kl_to_posterior"][0])


class _PriorPullMissing(LinearGaussian):
    """The ELBO's mean gradient without the prior's -mu (the KL term's pull forgotten)."""

    def elbo_grad(self, x, q_mean, q_cov):
        d_mean, d_cov = super().elbo_grad(x, q_mean, q_cov)
        return d_mean + q_mean, d_cov


def test_14_planted_bug():
    p = default_problem(0)
    bad = type(p)(_PriorPullMissing(p.model.A, p.model.b, p.model.noise_var), p.x, p.mixture,
                  p.x_mix)
    r = prior_or_posterior(bad, np.random.default_rng(0))
    assert not r.passed
    assert r.details["full_path"]["kl_to_posterior"][-1] > 1e-3


# --------------------------------------------------------------------------
# 15: ELBO surgery
# --------------------------------------------------------------------------


@given(problems, seeds)
def test_15_elbo_surgery(problem, seed):
    r = elbo_surgery(problem, np.random.default_rng(seed), n_data=2000, ns=(2, 10, 100),
                     n_z=600, z_tol=Z_TOL_TESTS)
    _ok(r)
    for row in r.details["finite_data"]:
        assert row["mutual_information"] <= row["log_N"] + 1e-12


def test_15_planted_bug(monkeypatch):
    """The aggregate posterior without the encoder's own covariance: q(z) = N(Wb + c, WCW^T)."""
    problem = default_problem(0)
    assert elbo_surgery(problem, np.random.default_rng(1)).passed
    monkeypatch.setattr(questions, "aggregate_posterior",
                        lambda model, W, c, S_q: (W @ model.b + c, W @ model.marginal_cov @ W.T))
    assert not elbo_surgery(problem, np.random.default_rng(1)).passed


# --------------------------------------------------------------------------
# 16: sticking the landing
# --------------------------------------------------------------------------


@given(problems, seeds)
def test_16_sticking_the_landing(problem, seed):
    r = sticking_the_landing(problem, np.random.default_rng(seed), n_mc=5000,
                             z_tol=Z_TOL_TESTS)
    _ok(r)
    assert r.details["stl_max_abs_at_posterior"] < 1e-9


def test_16_variance_formulas_at_the_posterior():
    lam = np.array([2.0, 5.0])
    full, stl = estimator_variances(lam, np.zeros(2), np.zeros(2), -np.log(lam))
    np.testing.assert_allclose(full, [2.0, 5.0, 0.5, 0.5], rtol=1e-14)
    np.testing.assert_allclose(stl, 0.0, atol=1e-14)


def test_16_planted_bug(monkeypatch):
    """grad_z log p(x, z) without the prior's -z: STL is biased and not 0 at the posterior."""
    problem = default_problem(0)
    assert sticking_the_landing(problem, np.random.default_rng(1)).passed
    original = LinearGaussian.log_joint_grad_z
    monkeypatch.setattr(LinearGaussian, "log_joint_grad_z",
                        lambda self, x, z: original(self, x, z) + z)
    r = sticking_the_landing(problem, np.random.default_rng(1))
    assert not r.passed and r.details["stl_max_abs_at_posterior"] > 1e-3


# --------------------------------------------------------------------------
# 17: IWAE's SNR and DReG
# --------------------------------------------------------------------------


@settings(max_examples=4)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(0, 2), st.booleans(), seeds)
def test_17_snr_slopes(model_seed, Z, extra_dims, full, seed):
    # D >= Z: with fewer data dimensions than latents the posterior is the prior in most
    # directions, the weights are far from the large-K regime at K <= 1000, and the decoder's
    # slope is still near 0 (seen for D = 1, Z = 3); the theory is about large K.
    D = min(4, Z + extra_dims)
    problem = make_problem(np.random.default_rng(model_seed), D, Z, 3, full)
    r = iwae_snr_and_dreg(problem, np.random.default_rng(seed), reps=250, z_tol=Z_TOL_TESTS)
    _ok(r)


def test_17_planted_bug(monkeypatch):
    """DReG with the IWAE weights wtilde instead of wtilde^2: biased, and caught."""
    problem = default_problem(0)
    assert iwae_snr_and_dreg(problem, np.random.default_rng(1), reps=250).passed
    original = questions.dreg_encoder_gradient
    monkeypatch.setattr(questions, "dreg_encoder_gradient",
                        lambda w, path, sigma, eps: original(np.sqrt(w), path, sigma, eps))
    r = iwae_snr_and_dreg(problem, np.random.default_rng(1), reps=250)
    assert not r.passed and r.details["paired_max_z"] > 10


# --------------------------------------------------------------------------
# 18: the network's own ELBO
# --------------------------------------------------------------------------


def test_sigma_points_match_two_moments():
    for Z in (1, 2, 3, 5):
        eps = sigma_points(Z, 2)
        assert eps.shape == (2 * Z, 2, Z)
        np.testing.assert_allclose(eps.mean(axis=0), 0.0, atol=1e-15)
        np.testing.assert_allclose(np.einsum("kbi,kbj->bij", eps, eps) / (2 * Z),
                                   np.broadcast_to(np.eye(Z), (2, Z, Z)), atol=1e-14)


@given(problems, seeds, st.integers(1, 6))
def test_18_network_elbo_is_exact(problem, seed, batch):
    r = network_elbo_is_exact(problem, np.random.default_rng(seed), batch=batch,
                              ks=(1, 10), reps=10)
    _ok(r)
    for row in r.details["table"]:
        assert np.all(row["network_elbo"] < row["log_px"])


def test_18_sigma_points_are_not_just_any_k_samples():
    """Power check: random eps with the same K is *not* exact (so the check can fail)."""
    problem = default_problem(0)
    rng = np.random.default_rng(3)
    vae, exact = linear_vae(problem.model, "gaussian-shared", rng)
    x = problem.x[None, :]
    mu, log_var, _ = vae.encode(x)
    exact_elbo = exact.elbo(x[0], mu[0], np.diag(np.exp(log_var[0])))
    eps = rng.standard_normal((2 * problem.model.Z, 1, problem.model.Z))
    assert abs(-vae.loss(x, eps) - exact_elbo) > 1e-3
    assert abs(-vae.loss(x, sigma_points(problem.model.Z, 1)) - exact_elbo) < 1e-12


def test_18_planted_bug(monkeypatch):
    """exp(log_var) used as the standard deviation in the network's sampler (pitfall 1)."""
    problem = default_problem(0)
    assert network_elbo_is_exact(problem, np.random.default_rng(1)).passed
    monkeypatch.setattr(minivae.vae, "reparameterize",
                        lambda mu, log_var, eps: (mu + np.exp(log_var) * eps, np.exp(log_var)))
    r = network_elbo_is_exact(problem, np.random.default_rng(1))
    assert not r.passed and r.details["max_relative_error"] > 1e-4


# --------------------------------------------------------------------------
# verify: all 18, JSON, pictures
# --------------------------------------------------------------------------


def test_registry_has_18_in_order():
    assert sorted(IDENTITIES) == list(range(1, 19))
    assert set(PLOTS) == set(range(13, 19))


def test_verify_json_carries_the_numbers_of_13_to_18(capsys):
    assert main(["verify", "--json", "--only", "13", "15", "17", "18"]) == 0
    doc = json.loads(capsys.readouterr().out)
    d13, d15, d17, d18 = (r["details"] for r in doc["identities"])
    assert len(d13["bimodal"]["reverse_optima"]) == 2
    assert [r["N"] for r in d15["finite_data"]] == [2, 10, 100, 1000]
    assert set(d17["median_slopes"]) == {"iwae_encoder", "dreg_encoder", "decoder"}
    assert [r["K"] for r in d17["table"]] == [1, 10, 100, 1000]
    assert len(d18["table"]) == 6 and doc["plots"] is None
    summary = " ".join(doc["identities"][2]["summary"])
    assert "slopes of log SNR vs log K" in summary


def test_plots_are_written_for_13_to_18(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results = run_all(seed=0, numbers=[3, 13, 14, 15, 16, 17, 18])
    paths = write_plots(results, tmp_path / "pics")
    assert [p.name for p in paths] == [
        "identity13_kl_direction.png", "identity14_prior_or_posterior.png",
        "identity15_elbo_surgery.png", "identity16_sticking_the_landing.png",
        "identity17_iwae_snr_and_dreg.png", "identity18_network_elbo_is_exact.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    assert not list((tmp_path / "pics").glob(".*"))  # no temporary files left behind


def test_verify_plots_without_matplotlib_says_so_and_exits_normally(tmp_path, capsys,
                                                                     monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["verify", "--only", "3", "--plots", str(tmp_path / "p")]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert main(["verify", "--json", "--only", "3", "--plots", str(tmp_path / "p")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["plots"] is None
    assert "matplotlib is not installed" in captured.err
    assert not (tmp_path / "p").exists()


def test_snr_slopes_script_runs_and_shows_the_trend(capsys):
    """A short run of scripts/snr_slopes.py (few draws): the plumbing, and the signs."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "snr_slopes.py"
    spec = importlib.util.spec_from_file_location("snr_slopes", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    t = script.exact_model(0, [1, 10, 100], 300)
    assert t["iwae_encoder"]["median_slope"] < -0.25 < 0.25 < t["decoder"]["median_slope"]
    n = script.network([1, 30], 60)
    assert n["iwae_encoder"]["median_slope"] < n["dreg_encoder"]["median_slope"]
    script.print_table("network", n)
    assert "slope of log SNR" in capsys.readouterr().out
