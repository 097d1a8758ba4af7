"""The VAE's parameters, loss pieces, dtypes, numerical stability and input errors."""

import numpy as np
import pytest

from minivae import VAE, ParamDict
from minivae.distributions import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_diag_standard_normal_per_dim,
    standard_normal_log_prob,
)
from minivae.likelihoods import LIKELIHOODS


def binary(rng, shape, dtype=np.float64):
    return (rng.random(shape) < 0.5).astype(dtype)


# ----------------------------------------------------------------------------
# Parameters: one flat vector with named views
# ----------------------------------------------------------------------------


def test_param_names_order_and_shapes():
    model = VAE(6, 2, hidden=(5, 4), likelihood="gaussian-shared")
    assert list(model.params) == [
        "encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b", "encoder.2.W", "encoder.2.b",
        "decoder.0.W", "decoder.0.b", "decoder.1.W", "decoder.1.b", "decoder.2.W", "decoder.2.b",
        "decoder.log_var",
    ]
    assert model.params["encoder.0.W"].shape == (6, 5)
    assert model.params["encoder.2.W"].shape == (4, 4)  # 2 Z outputs: mu then log_var
    assert model.params["decoder.0.W"].shape == (2, 4)  # decoder_hidden defaults to reversed
    assert model.params["decoder.2.W"].shape == (5, 6)
    assert model.n_params == sum(v.size for v in model.params.values())


def test_flat_vector_round_trips_exactly_and_views_alias_it():
    model = VAE(5, 3, hidden=(4,), seed=1)
    rng = np.random.default_rng(0)
    new = rng.standard_normal(model.n_params)
    model.set_flat(new)
    np.testing.assert_array_equal(model.get_flat(), new)
    assert model.get_flat() is not model.flat
    # every named view shares memory with the flat vector
    for view in model.params.values():
        assert np.shares_memory(view, model.flat)
    model.params["decoder.0.b"][0] = 123.0
    sl = model.params.slices()["decoder.0.b"]
    assert model.flat[sl][0] == 123.0


def test_param_dict_refuses_rebinding_and_bad_flat():
    model = VAE(3, 1, hidden=(2,))
    with pytest.raises(TypeError, match="write into them"):
        model.params["encoder.0.W"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        model.set_flat(np.zeros(model.n_params + 1))
    with pytest.raises(TypeError, match="dtype"):
        model.set_flat(np.zeros(model.n_params, dtype=np.float32))
    with pytest.raises(ValueError, match="flat vector must have shape"):
        ParamDict([("a", (2, 2))], np.zeros(3))


def test_config_round_trip_rebuilds_the_same_model():
    model = VAE(7, 2, hidden=(5,), decoder_hidden=(3, 3), likelihood="gaussian-fixed",
                activation="tanh", dtype=np.float32, seed=4, fixed_log_var=-1.5)
    clone = VAE.from_config(model.config())
    assert clone.config() == model.config()
    np.testing.assert_array_equal(clone.flat, model.flat)


def test_initialization_is_seeded_and_uses_no_global_state():
    # NumPy's legacy global state must be left alone by construction and training.
    before = np.random.get_state()  # noqa: NPY002
    a = VAE(4, 2, hidden=(3,), seed=7)
    x = (np.random.default_rng(0).random((3, 4)) < 0.5).astype(np.float64)
    a.loss_and_grad_sampled(x, np.random.default_rng(1))
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2] == after[2]
    np.testing.assert_array_equal(a.get_flat(), VAE(4, 2, hidden=(3,), seed=7).get_flat())
    assert not np.array_equal(a.get_flat(), VAE(4, 2, hidden=(3,), seed=8).get_flat())


# ----------------------------------------------------------------------------
# The pieces of the loss
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_loss_is_recon_plus_beta_kl_recomputed_independently(likelihood, kl):
    rng = np.random.default_rng(3)
    model = VAE(5, 2, hidden=(4,), likelihood=likelihood, seed=2, fixed_log_var=0.4)
    x = binary(rng, (6, 5)) if likelihood == "bernoulli" else rng.standard_normal((6, 5))
    eps = rng.standard_normal((3, 6, 2))
    terms = model.elbo_terms(x, eps, kl=kl, beta=0.5)

    # recompute from the definitions, reading the parameters by name
    p = model.params
    h = np.maximum(x @ p["encoder.0.W"] + p["encoder.0.b"], 0)
    enc = h @ p["encoder.1.W"] + p["encoder.1.b"]
    mu, log_var = enc[:, :2], enc[:, 2:]
    z = mu + np.exp(0.5 * log_var) * eps
    hd = np.maximum(z @ p["decoder.0.W"] + p["decoder.0.b"], 0)
    out = hd @ p["decoder.1.W"] + p["decoder.1.b"]
    if likelihood == "bernoulli":
        log_px = bernoulli_log_prob(x, out)
    elif likelihood == "gaussian-hetero":
        log_px = gaussian_log_prob(x, out[..., :5], out[..., 5:])
    elif likelihood in ("gaussian-shared", "gaussian-isotropic"):
        log_px = gaussian_log_prob(x, out, p["decoder.log_var"])
    else:
        log_px = gaussian_log_prob(x, out, 0.4)
    recon = -log_px.mean(axis=0)
    kl_closed = kl_diag_standard_normal_per_dim(mu, log_var)
    if kl == "analytic":
        kl_term = kl_closed.sum(1)
    else:
        kl_term = (gaussian_log_prob(z, mu, log_var) - standard_normal_log_prob(z)).mean(0)

    np.testing.assert_allclose(terms.recon, recon, rtol=1e-12)
    np.testing.assert_allclose(terms.kl, kl_term, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(terms.kl_per_dim, kl_closed, rtol=1e-12, atol=1e-14)
    assert terms.loss == pytest.approx(np.mean(recon + 0.5 * kl_term), rel=1e-12)
    assert terms.recon.shape == terms.kl.shape == (6,)
    assert (terms.kl_per_dim >= 0).all()  # the KL is never negative (sign pitfall)


def test_loss_is_a_mean_over_the_batch_not_a_sum():
    """Duplicating the batch leaves the per-datapoint loss unchanged (mean, not sum)."""
    rng = np.random.default_rng(0)
    model = VAE(5, 2, hidden=(4,))
    x = binary(rng, (3, 5))
    eps = rng.standard_normal((2, 3, 2))
    loss1, g1 = model.loss_and_grad(x, eps)
    loss2, g2 = model.loss_and_grad(np.concatenate([x, x]), np.concatenate([eps, eps], axis=1))
    assert loss2 == pytest.approx(loss1, rel=1e-12)
    np.testing.assert_allclose(g2.flat, g1.flat, rtol=1e-10, atol=1e-14)


def test_mc_kl_elbo_averages_to_the_closed_form():
    """Same eps, both KL modes: the difference is the MC KL's error, mean 0.

    With K = 40,000 samples the two losses must agree within 5 standard errors,
    the standard error taken from the per-sample spread of log q - log p (seed 11).
    """
    rng = np.random.default_rng(11)
    model = VAE(4, 3, hidden=(6,), seed=5)
    x = binary(rng, (2, 4))
    k = 40_000
    eps = rng.standard_normal((k, 2, 3))
    closed = model.loss(x, eps, kl="analytic")
    mc = model.loss(x, eps, kl="mc")
    mu, log_var, _ = model.encode(x)
    z = mu + np.exp(0.5 * log_var) * eps
    per_sample = (gaussian_log_prob(z, mu, log_var) - standard_normal_log_prob(z)).mean(axis=1)
    stderr = per_sample.std(ddof=1) / np.sqrt(k)
    assert abs(mc - closed) < 5 * stderr
    assert stderr < 0.01  # the test has power: a KL off by 1% of a nat would fail


def test_gradients_are_fresh_each_call_not_accumulated():
    rng = np.random.default_rng(0)
    model = VAE(4, 2, hidden=(3,))
    x, eps = binary(rng, (3, 4)), rng.standard_normal((1, 3, 2))
    _, g1 = model.loss_and_grad(x, eps)
    g1_copy = g1.flat.copy()
    _, g2 = model.loss_and_grad(x, eps)
    np.testing.assert_array_equal(g2.flat, g1_copy)
    assert not np.shares_memory(g1.flat, g2.flat)
    assert list(g2) == list(model.params)


def test_sampled_variant_equals_explicit_eps():
    model = VAE(4, 2, hidden=(3,))
    x = binary(np.random.default_rng(0), (5, 4))
    loss_a, g_a = model.loss_and_grad_sampled(x, np.random.default_rng(9), k=2)
    eps = np.random.default_rng(9).standard_normal((2, 5, 2))
    loss_b, g_b = model.loss_and_grad(x, eps)
    assert loss_a == loss_b
    np.testing.assert_array_equal(g_a.flat, g_b.flat)


def test_beta_weights_only_the_kl():
    rng = np.random.default_rng(1)
    model = VAE(4, 2, hidden=(3,))
    x, eps = binary(rng, (3, 4)), rng.standard_normal((2, 3, 2))
    t1 = model.elbo_terms(x, eps, beta=1.0)
    t0 = model.elbo_terms(x, eps, beta=0.0)
    assert t0.loss == pytest.approx(t1.recon.mean(), rel=1e-14)
    assert t1.loss - t0.loss == pytest.approx(t1.kl.mean(), rel=1e-12)


# ----------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_float32_model_stays_float32_and_matches_float64(likelihood):
    rng = np.random.default_rng(2)
    m64 = VAE(6, 2, hidden=(5,), likelihood=likelihood, seed=3)
    m32 = VAE(6, 2, hidden=(5,), likelihood=likelihood, seed=3, dtype=np.float32)
    assert m32.flat.dtype == np.float32
    m32.set_flat(m64.get_flat().astype(np.float32))
    m64.set_flat(m32.get_flat().astype(np.float64))
    x64 = binary(rng, (4, 6)) if likelihood == "bernoulli" else rng.standard_normal((4, 6))
    eps64 = rng.standard_normal((2, 4, 2))
    x32, eps32 = x64.astype(np.float32), eps64.astype(np.float32)
    mu, log_var, _ = m32.encode(x32)
    assert mu.dtype == log_var.dtype == np.float32
    out, _ = m32.decode(eps32)
    assert out.dtype == np.float32
    loss32, g32 = m32.loss_and_grad(x32, eps32, kl="mc")
    loss64, g64 = m64.loss_and_grad(x64, eps64, kl="mc")
    assert g32.flat.dtype == np.float32
    assert m32.sample_eps(rng, 3).dtype == np.float32
    assert m32.sample(rng, 2).dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(g32.flat, g64.flat, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------
# Stability at extreme values
# ----------------------------------------------------------------------------


def _set_output_bias(model, prefix, columns, value):
    """Zero the last layer's weights of an MLP and set chosen bias columns."""
    mlp = model.encoder if prefix == "encoder" else model.decoder
    w, b = mlp.names[-1]
    model.params[w][...] = 0.0
    model.params[b][columns] = value


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("logit", [1000.0, -1000.0])
def test_bernoulli_logits_of_1000_are_finite_and_exact(dtype, logit):
    rng = np.random.default_rng(0)
    model = VAE(4, 2, hidden=(3,), dtype=dtype)
    _set_output_bias(model, "decoder", slice(None), logit)
    x = np.array([[1, 0, 1, 0]], dtype=dtype)
    terms = model.elbo_terms(x, model.sample_eps(rng, 1))
    # two pixels agree with the logit's sign (log-prob 0), two disagree (log-prob -1000)
    assert terms.recon[0] == pytest.approx(2000.0, rel=1e-6)
    loss, grads = model.loss_and_grad(x, model.sample_eps(rng, 1, k=2), kl="mc")
    assert np.isfinite(loss) and np.isfinite(grads.flat).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("log_var", [50.0, -50.0])
@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_encoder_log_variance_of_50_is_finite(dtype, log_var, kl):
    rng = np.random.default_rng(0)
    model = VAE(4, 2, hidden=(3,), dtype=dtype, activation="tanh")
    _set_output_bias(model, "encoder", slice(2, 4), log_var)
    x = binary(rng, (3, 4), dtype)
    loss, grads = model.loss_and_grad(x, model.sample_eps(rng, 3, k=2), kl=kl)
    assert np.isfinite(loss) and np.isfinite(grads.flat).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("log_var", [50.0, -50.0])
@pytest.mark.parametrize("likelihood", ["gaussian-hetero", "gaussian-shared",
                                        "gaussian-isotropic"])
def test_decoder_log_variance_of_50_is_finite(dtype, log_var, likelihood):
    rng = np.random.default_rng(0)
    model = VAE(4, 2, hidden=(3,), dtype=dtype, likelihood=likelihood)
    if likelihood == "gaussian-hetero":
        model.params["decoder.1.b"][4:] = log_var
        model.params["decoder.1.W"][:, 4:] = 0.0
    else:
        model.params["decoder.log_var"][...] = log_var
    x = rng.standard_normal((3, 4)).astype(dtype)
    loss, grads = model.loss_and_grad(x, model.sample_eps(rng, 3))
    assert np.isfinite(loss) and np.isfinite(grads.flat).all()


# ----------------------------------------------------------------------------
# Bad input: clear, specific errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"input_dim": 0}, ValueError, "input_dim must be a positive integer"),
        ({"input_dim": 2.5}, ValueError, "input_dim must be a positive integer"),
        ({"latent_dim": -1}, ValueError, "latent_dim must be a positive integer"),
        ({"hidden": (4, 0)}, ValueError, "every entry of hidden"),
        ({"hidden": 5}, TypeError, "hidden must be a sequence"),
        ({"decoder_hidden": (0,)}, ValueError, "every entry of decoder_hidden"),
        ({"likelihood": "poisson"}, ValueError, "likelihood must be one of"),
        ({"activation": "swish"}, ValueError, "activation must be one of"),
        ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
        ({"dtype": "float16"}, TypeError, "dtype must be float32 or float64"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
        ({"likelihood": "gaussian-fixed", "fixed_log_var": float("nan")}, ValueError,
         "fixed_log_var must be finite"),
    ],
)
def test_invalid_constructor_arguments(kwargs, exc, match):
    args = {"input_dim": 4, "latent_dim": 2, **kwargs}
    with pytest.raises(exc, match=match):
        VAE(**args)


def test_bad_inputs_to_loss_and_grad():
    model = VAE(4, 2, hidden=(3,))
    rng = np.random.default_rng(0)
    x = binary(rng, (3, 4))
    eps = rng.standard_normal((1, 3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\)"):
        model.loss_and_grad(x[:, :3], eps)
    with pytest.raises(ValueError, match=r"x must have shape"):
        model.loss_and_grad(x[0], eps)
    with pytest.raises(TypeError, match="x has dtype float32 but the model is float64"):
        model.loss_and_grad(x.astype(np.float32), eps)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        model.loss_and_grad(x.tolist(), eps)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        model.loss_and_grad(bad, eps)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        model.loss_and_grad(bad, eps)
    with pytest.raises(ValueError, match=r"eps must have shape \(K, 3, 2\)"):
        model.loss_and_grad(x, rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match=r"eps must have shape \(K, 3, 2\)"):
        model.loss_and_grad(x, rng.standard_normal((1, 4, 2)))
    with pytest.raises(TypeError, match="eps has dtype float32"):
        model.loss_and_grad(x, eps.astype(np.float32))
    with pytest.raises(ValueError, match="kl must be one of"):
        model.loss_and_grad(x, eps, kl="exact")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        model.loss_and_grad(x, eps, beta=-1.0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        model.loss_and_grad_sampled(x, 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.loss_and_grad_sampled(x, rng, k=0)
