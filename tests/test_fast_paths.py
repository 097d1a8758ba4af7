"""The speed-motivated code paths give the same numbers as the plain ones.

Each fast path (issue 6) has a plain counterpart that the rest of the suite
checks by finite differences; these tests pin the two together.
"""


import numpy as np
import pytest

from minivae import SGD, VAE, Adam, BurdaAdam, layers, objectives, optim
from minivae import vae as vae_module
from minivae.distributions import (
    bernoulli_log_prob,
    bernoulli_log_prob_elementwise,
    bernoulli_log_prob_grad,
    bernoulli_log_prob_with_grad,
    sum_last_axis,
)
from minivae.layers import affine_backward, relu_forward
from minivae.likelihoods import LIKELIHOODS, make_likelihood
from minivae.numerics import flush_subnormals, sigmoid, softplus


def test_softplus_and_sigmoid_match_the_textbook_formulas():
    x = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(softplus(x), np.log1p(np.exp(x)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14, atol=0)
    # scalars and integers keep working, float32 stays float32
    assert softplus(0.0) == pytest.approx(np.log(2.0), rel=1e-15)
    np.testing.assert_allclose(softplus(np.array([1, 2])), np.log1p(np.exp([1.0, 2.0])),
                               rtol=1e-15)
    assert softplus(np.ones(3, np.float32)).dtype == np.float32
    assert sigmoid(np.ones(3, np.float32)).dtype == np.float32
    assert sigmoid(np.float32(-200.0)) == 0.0


def test_sum_last_axis_is_np_sum():
    a = np.random.default_rng(0).standard_normal((3, 4, 7))
    np.testing.assert_allclose(sum_last_axis(a), a.sum(-1), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 11), (5, 11), (40, 3, 1000), (2, 3, 30000)],
                         ids=["one block", "2-d", "blocks, the last partial", "a slab a block"])
def test_bernoulli_forward_with_gradient_matches_the_plain_formulas(dtype, shape):
    """log p(x|z) with its elementwise gradient sigma(l) - x computed on the way (block by
    block where the decoder output is large) equals the plain formulas (log p to a few ulp
    per halving of its sum, the gradient to an ulp of 1), including logits whose e^u
    overflows or underflows."""
    rng = np.random.default_rng(0)
    logits = (8 * rng.standard_normal(shape)).astype(dtype)
    logits.reshape(-1, shape[-1])[-1, :4] = [-1000, 1000, -95, 95]  # e^u over/underflows
    x = (rng.random(shape[-2:]) < 0.5).astype(dtype)
    x[-1, :4] = [0, 0, 1, 1]
    log_p, g = bernoulli_log_prob_with_grad(x, logits)
    eps = np.finfo(dtype).eps
    assert log_p.dtype == g.dtype == dtype
    sum_eps = 8 * eps * np.log2(shape[-1])  # sums over D terms, in other orders
    np.testing.assert_allclose(log_p, bernoulli_log_prob_elementwise(x, logits).sum(-1),
                               rtol=sum_eps)
    np.testing.assert_allclose(bernoulli_log_prob(x, logits), log_p, rtol=sum_eps)
    np.testing.assert_allclose(g, -bernoulli_log_prob_grad(x, logits), rtol=0, atol=2 * eps)
    np.testing.assert_allclose(g.reshape(-1, shape[-1])[-1, :4], [0, 1, -1, 0], rtol=0,
                               atol=1e-30)


def test_bernoulli_log_prob_is_accurate_where_the_textbook_form_cancels():
    """x l - softplus(l) at x = 1, l = 13.2 loses 3e-10 relative in float64 (1e-2 in float32);
    -softplus((1 - 2x) l) matches the exact value log sigma(l) = -log1p(e^-l) to a few ulp in
    both dtypes, and so does the gradient 1 - sigma(l) = sigma(-l), where the textbook
    x - sigmoid(l) is off by 100% once sigma(l) rounds to 1."""
    for dtype in (np.float32, np.float64):
        l = np.array([[13.2, 30.0, -25.0]], dtype)
        x = np.array([[1.0, 1.0, 0.0]], dtype)
        exact = -np.log1p(np.exp(-np.abs(l.astype(np.float64))))  # log p of the observed x
        log_p, g = bernoulli_log_prob_with_grad(x, l[None])
        rtol = 4 * np.finfo(dtype).eps
        np.testing.assert_allclose(bernoulli_log_prob_elementwise(x, l), exact, rtol=rtol)
        np.testing.assert_allclose(log_p[0, 0], exact.sum(), rtol=rtol)
        exact_grad = np.array([1, 1, -1]) / (1 + np.exp(np.abs(l[0].astype(np.float64))))
        np.testing.assert_allclose(-g[0, 0], exact_grad, rtol=rtol)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_cache_pair_matches_log_lik_and_log_lik_grad(name):
    rng = np.random.default_rng(1)
    lik = make_likelihood(name, fixed_log_var=-0.3)
    D = 6
    model = VAE(D, 2, hidden=(4,), likelihood=name, seed=0)
    out = rng.standard_normal((2, 3, lik.out_dim(D)))
    x = (rng.random((3, D)) < 0.5).astype(np.float64)
    weight = rng.standard_normal((2, 3))
    log_p, cache = lik.log_lik_and_cache(x, out, model.params)
    np.testing.assert_allclose(log_p, lik.log_lik(x, out, model.params), rtol=1e-14)
    g1, g2 = model.new_grad(), model.new_grad()
    d1 = lik.log_lik_grad(x, out, model.params, weight, g1)
    d2 = lik.log_lik_grad_from_cache(x, out, model.params, weight, g2, cache)
    np.testing.assert_allclose(d2, d1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g2.flat, g1.flat, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_grad_out_buffer_is_overwritten_not_accumulated(dtype, likelihood):
    """Every entry is written: the gradient of a fresh (np.empty) buffer is never garbage."""
    rng = np.random.default_rng(2)
    model = VAE(8, 3, hidden=(5,), dtype=dtype, seed=3, likelihood=likelihood)
    if likelihood == "bernoulli":
        x = (rng.random((4, 8)) < 0.5).astype(dtype)
    else:
        x = rng.standard_normal((4, 8)).astype(dtype)
    eps = model.sample_eps(rng, 4, 2)
    loss, fresh = model.loss_and_grad(x, eps)
    assert np.isfinite(fresh.flat).all()
    buf = model.new_grad()
    buf.flat[...] = np.nan  # garbage that must not survive
    for _ in range(2):  # twice: overwritten, never added to
        loss2, grads = model.loss_and_grad(x, eps, out=buf)
    assert grads is buf and loss2 == loss
    np.testing.assert_array_equal(buf.flat, fresh.flat)
    assert fresh.flat.dtype == dtype


def test_loss_and_grad_out_must_have_the_model_layout():
    model = VAE(8, 3, hidden=(5,), seed=0)
    other = VAE(8, 2, hidden=(5,), seed=0)
    x = np.zeros((2, 8))
    eps = np.zeros((1, 2, 3))
    with pytest.raises(TypeError, match="out"):
        model.loss_and_grad(x, eps, out=other.new_grad())
    with pytest.raises(TypeError, match="out"):
        model.loss_and_grad(x, eps, out=np.zeros(model.n_params))
    with pytest.raises(TypeError, match="dtype"):
        model.loss_and_grad(x, eps, out=VAE(8, 3, hidden=(5,), dtype=np.float32).new_grad())


def test_float32_adam_stays_float32_and_matches_float64_closely():
    rng = np.random.default_rng(4)
    p64 = rng.standard_normal(50)
    p32 = p64.astype(np.float32)
    o64, o32 = Adam(lr=1e-2), Adam(lr=1e-2)
    for _ in range(20):
        g = rng.standard_normal(50)
        o64.step(p64, g)
        o32.step(p32, g.astype(np.float32))
    assert p32.dtype == o32.m.dtype == o32.v.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-5)


def _stable_softplus(x):
    """The other stable form, max(x, 0) + log1p(exp(-|x|)): never overflows."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_fast_form_matches_the_stable_form_everywhere(dtype):
    """log1p(exp(x)) where e^x is finite, x where it overflows: the same numbers, to an ulp,
    except that values below the smallest normal float may be flushed to 0."""
    big = 800.0 if dtype == np.float64 else 100.0  # past the overflow of e^x (709.8, 88.7)
    x = np.concatenate([np.linspace(-big, big, 4001), [-1e30, 1e30, 88.5, 88.8, 709.7, 709.9]])
    x = x.astype(dtype)
    got, want = softplus(x), _stable_softplus(x)
    assert got.dtype == dtype
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=tiny)
    assert np.array_equal(got[x > 50], x[x > 50])  # the linear tail is exactly x
    special = softplus(np.array([-np.inf, np.inf, np.nan, 1000.0], dtype))
    assert special[0] == 0 and special[1] == np.inf and np.isnan(special[2])
    assert special[3] == 1000.0  # an overflow in the same array as a NaN is still fixed
    assert softplus(dtype(1000.0)) == 1000.0 and softplus(np.zeros((0, 3), dtype)).shape == (0, 3)


def test_softplus_flushes_exactly_the_subnormal_results_in_float32():
    """Below x = log(1.2e-38) = -87.3, e^x is subnormal: those softplus values are 0, and
    every value above the smallest normal float is the plain formula's (to an ulp)."""
    x = np.linspace(-110, -80, 3001).astype(np.float32)
    plain = np.log1p(np.exp(x.astype(np.float64)))  # float64: no subnormals here
    got = softplus(x)
    tiny = np.finfo(np.float32).tiny
    assert np.all(got[plain < tiny] == 0) and np.any(plain < tiny)
    normal = plain >= 1.001 * tiny
    np.testing.assert_allclose(got[normal], plain[normal], rtol=1e-6)
    assert not np.any((got > 0) & (got < tiny))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_subnormals_zeroes_exactly_the_subnormals(dtype):
    tiny = np.finfo(dtype).tiny
    a = np.array([tiny, -tiny, tiny / 2, -tiny / 8, tiny * 0.999, 0.0, 1.0, -3.5], dtype)
    out = flush_subnormals(a)
    assert out is a
    np.testing.assert_array_equal(a, np.array([tiny, -tiny, 0, 0, 0, 0, 1.0, -3.5], dtype))


def _iwae_with_a_negligible_sample(dtype):
    """An IWAE batch in which one sample's normalized weight is below 2^-64 (about 1e-20) for
    every datapoint: that sample's eps is moved out along one axis until its log w falls
    about 46 nats below the other samples' (found by a scan in float64, then used in
    either dtype)."""
    rng = np.random.default_rng(7)
    model = VAE(12, 3, hidden=(6,), activation="tanh", dtype=np.float64, seed=1)
    model.params["encoder.1.b"][3:] = 4.0  # broad q (sigma ~ 7): far-out z cost log p(z)
    x = (rng.random((4, 12)) < 0.4).astype(np.float64)
    eps = rng.standard_normal((6, 4, 3))
    for b in range(4):
        for s in np.arange(0.0, 20.0, 0.01):
            eps[0, b, 0] = s
            w = objectives._softmax_over_k(objectives.log_importance_weights(model, x, eps))
            if w[0, b] < 1e-20:
                break
    cast = VAE(12, 3, hidden=(6,), activation="tanh", dtype=dtype, seed=1)
    cast.set_flat(model.flat.astype(dtype))
    return cast, x.astype(dtype), eps.astype(dtype)


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_iwae_drops_samples_below_the_weight_floor_and_the_gradient_is_unchanged(
        dtype, rtol, estimator, monkeypatch):
    """Samples whose normalized weight is below 2^-64 get weight 0 in the gradient; compared
    with the same computation without the floor, the loss is identical and every gradient
    entry agrees to the dtype's roundoff (the bound: 2^-64 K of the largest sample gradient)."""
    model, x, eps = _iwae_with_a_negligible_sample(dtype)
    fwd = model.forward(x, eps)
    w = objectives._softmax_over_k(objectives._log_weights(fwd))
    assert np.all(w[0] < objectives.WEIGHT_FLOOR) and np.any(w[0] > 0)  # what the floor is for
    assert not objectives._gradient_weights(objectives._log_weights(fwd))[0].any()
    f = {"iwae": objectives.iwae_loss_and_grad, "dreg": objectives.dreg_loss_and_grad}[estimator]
    loss, fast = f(model, x, eps)
    monkeypatch.setattr(objectives, "WEIGHT_FLOOR", 0.0)
    loss_plain, plain = f(model, x, eps)
    assert loss == loss_plain
    scale = np.abs(plain.flat).max()
    np.testing.assert_allclose(fast.flat, plain.flat, rtol=rtol, atol=rtol * 1e-6 * scale)


def _decoder_with_saturated_pixels(dtype):
    """A Bernoulli model whose decoder gives 30 always-off pixels logits near -90 to -100, as
    a trained decoder does (784-400-20 after 93 epochs: down to -187): sigmoid(l) / B is
    subnormal in float32 there."""
    rng = np.random.default_rng(3)
    model = VAE(40, 3, hidden=(8,), dtype=dtype, seed=2)
    model.params["decoder.1.b"][:30] = np.linspace(-100, -88, 30)
    x = (rng.random((16, 40)) < 0.5).astype(dtype)
    x[:, :30] = 0
    return model, x, model.sample_eps(rng, 16, 2)


def _loss_grad_and_decoder_input(model, x, eps, monkeypatch, plain=False):
    """loss_and_grad, and what the decoder's backward pass received; ``plain``: with the
    textbook likelihood gradient (x - sigmoid(l)) * w, nothing set to 0."""
    seen = []
    real = model.decode_backward
    monkeypatch.setattr(model, "decode_backward",
                        lambda d, cache, grads: seen.append(d.copy()) or real(d, cache, grads))
    lik = model.likelihood
    if plain:
        monkeypatch.setattr(lik, "log_lik_grad_from_cache",
                            lambda x, out, params, w, grads, cache: lik.log_lik_grad(
                                x, out, params, w, grads))
        monkeypatch.setattr(vae_module, "flush_subnormals", lambda a: a)
    loss, grads = model.loss_and_grad(x, eps)
    monkeypatch.undo()
    return loss, grads.flat, seen[0]


def test_decoder_backward_input_has_no_subnormals_and_the_gradient_is_unchanged(monkeypatch):
    """float32: where sigmoid(l) / B is subnormal (more than 3% of the entries here), the
    decoder's backward pass gets 0 instead. The gradient is as close to the float64 one as
    the textbook float32 computation (x - sigmoid(l)) * w, which keeps those entries: both
    within 1e-6 of the gradient's largest entry. float64 has nothing that small, and there
    the two agree to roundoff."""
    model, x, eps = _decoder_with_saturated_pixels(np.float32)
    loss, fast, d_fast = _loss_grad_and_decoder_input(model, x, eps, monkeypatch)
    loss_plain, plain, d_plain = _loss_grad_and_decoder_input(model, x, eps, monkeypatch, True)
    tiny = np.finfo(np.float32).tiny
    subnormal = lambda a: (a != 0) & (np.abs(a) < tiny)  # noqa: E731
    assert not subnormal(d_fast).any() and np.mean(subnormal(d_plain)) > 0.03
    assert loss == loss_plain
    model64 = VAE(40, 3, hidden=(8,), dtype=np.float64, seed=2)  # the same numbers, in float64
    model64.set_flat(model.flat.astype(np.float64))
    x64, eps64 = x.astype(np.float64), eps.astype(np.float64)
    _, ref, d_ref = _loss_grad_and_decoder_input(model64, x64, eps64, monkeypatch)
    _, plain64, _ = _loss_grad_and_decoder_input(model64, x64, eps64, monkeypatch, True)
    assert not ((d_ref != 0) & (np.abs(d_ref) < np.finfo(np.float64).tiny)).any()
    scale = np.abs(ref).max()
    np.testing.assert_allclose(plain64, ref, rtol=1e-13, atol=1e-14 * scale)
    assert np.abs(fast - ref).max() <= 1e-6 * scale
    assert np.abs(plain - ref).max() <= 1e-6 * scale


@pytest.mark.parametrize("make", [lambda: Adam(lr=1e-2, beta1=0.5),
                                  lambda: Adam(lr=1e-2, beta1=0.0, beta2=0.0)])
def test_adam_in_chunks_is_bit_identical_to_one_piece(make, monkeypatch):
    """The chunked update gives exactly the numbers of the same update on the whole vector
    (over 30 steps: beta1 = 0.5 renormalizes its pre-scaled m every 8 steps, beta = 0 every
    step)."""
    rng = np.random.default_rng(0)
    n = 2 * optim.CHUNK + 123  # three chunks, the last one partial
    theta0 = rng.standard_normal(n).astype(np.float32)
    grads = rng.standard_normal((30, n)).astype(np.float32)
    runs = []
    for chunk in (optim.CHUNK, 10 * n):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        theta, opt = theta0.copy(), make()
        for g in grads:
            opt.step(theta, g)
        runs.append((theta, opt.m, opt.v))
    for chunked, whole in zip(*runs, strict=True):
        np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.9, 0.0)])
def test_prescaled_adam_matches_the_plain_update_in_float32(b1, b2):
    """Pre-scaled moments (a step adds to M and V instead of decaying them) give the plain
    update's numbers up to float32 roundoff: over 300 steps with several renormalizations,
    the parameters agree to 1e-5 of their size (both sides round each of 300 updates, about
    1e-6 in all; the parameters moved by about 0.5, so a missing bias correction or scale
    would be off by 1e-2 or more), and m, v to a few ulp."""
    rng = np.random.default_rng(5)
    n = 1000
    theta0 = rng.standard_normal(n).astype(np.float32)
    theta, opt = theta0.copy(), Adam(lr=1e-2, beta1=b1, beta2=b2)
    plain, m, v = theta0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t in range(1, 301):
        g = (rng.standard_normal(n) * np.exp(rng.standard_normal(n))).astype(np.float32)
        opt.step(theta, g)
        m = np.float32(b1) * m + np.float32(1 - b1) * g
        v = np.float32(b2) * v + np.float32(1 - b2) * g * g
        m_hat, v_hat = m / np.float32(1 - b1**t), v / np.float32(1 - b2**t)
        plain -= np.float32(1e-2) * m_hat / (np.sqrt(v_hat) + np.float32(1e-8))
    assert theta.dtype == np.float32
    assert np.abs(plain - theta0).max() > 0.3
    assert np.abs(theta - plain).max() <= 1e-5 * np.abs(plain).max()
    np.testing.assert_allclose(opt.m, m, rtol=1e-5, atol=1e-6 * np.abs(m).max())
    np.testing.assert_allclose(opt.v, v, rtol=1e-5, atol=1e-6 * np.abs(v).max())


def test_sgd_in_chunks_is_bit_identical_to_the_plain_formula():
    rng = np.random.default_rng(1)
    n = optim.CHUNK + 7
    theta, vel = rng.standard_normal(n).astype(np.float32), np.zeros(n, np.float32)
    ours, plain = theta.copy(), theta.copy()
    opt, opt0 = SGD(lr=0.1, momentum=0.9), SGD(lr=0.1)
    ours0 = theta.copy()
    for _ in range(3):
        g = rng.standard_normal(n).astype(np.float32)
        opt.step(ours, g)
        vel = np.float32(0.9) * vel + g
        plain = plain - np.float32(0.1) * vel
        opt0.step(ours0, g)
    np.testing.assert_array_equal(ours, plain)
    assert ours.dtype == np.float32 and opt.velocity.dtype == np.float32


@pytest.mark.parametrize("make", [lambda: Adam(lr=1e-2, beta2=0.9),
                                  lambda: BurdaAdam(lr=1e-2, beta1=0.9, beta2=0.9,
                                                    grad_scale=3.0)])
def test_decayed_moments_are_flushed_and_the_trajectory_is_unchanged(make, monkeypatch):
    """Coordinates whose gradient becomes exactly 0 have moments that decay into the subnormal
    range (and, in plain arithmetic, stay there); the optimizers set them to 0 (BurdaAdam
    every FLUSH_EVERY steps, Adam whenever it renormalizes its pre-scaled moments). The
    parameters are the same, bit for bit, as without the flush (beta2 = 0.9 so that v gets
    there in ~900 steps)."""
    rng = np.random.default_rng(2)
    n, steps = 40, 1000
    grads = rng.standard_normal((steps, n)).astype(np.float32)
    grads[5:, :10] = 0  # ten coordinates stop getting a gradient after step 5
    tiny = np.finfo(np.float32).tiny
    subnormal = lambda a: (a != 0) & (np.abs(a) < tiny)  # noqa: E731
    runs = {}
    for name in ("flushed", "plain"):
        if name == "plain":  # the same optimizer with the flush turned off
            monkeypatch.setattr(optim, "flush_subnormals", lambda a: a)
        theta, opt = np.ones(n, np.float32), make()
        seen_subnormal = False
        for g in grads:
            opt.step(theta, g)
            seen_subnormal |= bool(subnormal(opt.m[:10]).any() or subnormal(opt.v[:10]).any())
        runs[name] = theta, opt, seen_subnormal
    (t_fast, fast, _), (t_plain, plain, plain_subnormal) = runs["flushed"], runs["plain"]
    assert plain_subnormal  # without the flush there were subnormal moments ...
    assert not fast.m[:10].any() and not fast.v[:10].any()  # ... with it they end at 0
    np.testing.assert_array_equal(t_fast, t_plain)
    np.testing.assert_array_equal(fast.m[10:], plain.m[10:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_with_a_row_of_zeros_is_the_plain_maximum(dtype):
    x = np.random.default_rng(5).standard_normal((7, 13)).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert out.dtype == dtype and cache is out


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_bias_gradient_as_a_matrix_vector_product_is_the_column_sum(dtype, rtol):
    rng = np.random.default_rng(6)
    x, W = rng.standard_normal((50, 9)).astype(dtype), rng.standard_normal((9, 4)).astype(dtype)
    dout = rng.standard_normal((50, 4)).astype(dtype)
    db_out = np.full(4, np.nan, dtype)
    _, _, db = affine_backward(dout, (x, W), db_out=db_out)
    assert db is db_out and db.dtype == dtype
    np.testing.assert_allclose(db, np.sum(dout.astype(np.float64), axis=0), rtol=rtol)


def test_a_fortran_ordered_batch_is_taken_in_c_order_with_the_same_numbers():
    """check_x returns x in C order (elementwise work mixing layouts is several times
    slower), so a Fortran-ordered batch, such as a slice of an array loaded from an .npz
    file, gives exactly the loss and gradient of the same batch in C order."""
    rng = np.random.default_rng(7)
    model = VAE(12, 3, hidden=(5,), dtype=np.float32, seed=1)
    x = (rng.random((6, 12)) < 0.4).astype(np.float32)
    eps = model.sample_eps(rng, 6)
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous and model.check_x(fortran).flags.c_contiguous
    assert model.check_x(x) is x  # no copy of a batch that is already in C order
    loss_c, grad_c = model.loss_and_grad(x, eps)
    loss_f, grad_f = model.loss_and_grad(fortran, eps)
    assert loss_f == loss_c
    np.testing.assert_array_equal(grad_f.flat, grad_c.flat)


_FAULTS_OF_REPEATED_ARRAYS = """
import resource, sys
import numpy as np
from minivae.tool.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def step():  # like a training step: a few 3 MB arrays made from each other, then freed
    a = np.ones(784000, np.float32); b = a * 2; c = np.exp(b); del a
    d = c + b; del b, c; e = d * d; del d, e
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def test_retain_freed_memory_stops_the_page_faults_of_repeated_large_arrays():
    """In a fresh process, a step-like sequence of 3 MB arrays, repeated, has its pages
    faulted in anew every time (about 2000 faults per repetition: glibc gives the freed
    memory back); after retain_freed_memory() it is faulted in once and then reused."""
    import subprocess
    import sys

    def faults_per_step(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS_OF_REPEATED_ARRAYS, mode],
                             capture_output=True, text=True, check=True).stdout.split()
        return out[0], float(out[1])

    applied, retained = faults_per_step("retain")
    if applied != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    _, default = faults_per_step("default")
    assert default > 1000 and retained < 50


def test_every_flat_vector_starts_on_a_64_byte_boundary():
    """Parameters, gradients (new, default and copied) and every optimizer's state, also
    after a state round trip, start on a cache line (see params.aligned_empty)."""
    from minivae.params import ALIGN

    for dtype in (np.float32, np.float64):
        model = VAE(7, 3, hidden=(5,), dtype=dtype)
        x = (np.random.default_rng(0).random((4, 7)) < 0.5).astype(dtype)
        eps = model.sample_eps(np.random.default_rng(1), 4)
        vectors = [model.flat, model.new_grad().flat, model.params.copy().flat,
                   model.loss_and_grad(x, eps)[1].flat]
        for opt in (Adam(), SGD(momentum=0.9), BurdaAdam()):
            opt.step(model.flat, vectors[1])
            again = type(opt)()
            again.load_state_dict(opt.state_dict())
            for o in (opt, again):
                vectors += [a for a in vars(o).values() if isinstance(a, np.ndarray)]
                vectors += [o._m.stored, o._v.stored] if isinstance(o, Adam) else []
        # Adam: buffer, m, v (the loaded copy: m, v); SGD: velocity, buffer (velocity);
        # BurdaAdam: m, v, buffer (m, v): buffers are made by a step
        assert len(vectors) == 4 + (3 + 2) + (2 + 1) + (3 + 2)
        for a in vectors:
            assert a.ctypes.data % ALIGN == 0 and a.dtype == dtype


@pytest.mark.parametrize("name", sorted(layers.IN_PLACE))
def test_in_place_activations_give_the_same_numbers(name):
    """With out=x the activation overwrites its input with exactly the numbers it would
    return in a new array, and its cache (its output) serves the backward pass alike."""
    forward, backward = layers.get_activation(name)
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    dout = np.ones_like(x)
    plain, plain_cache = forward(x.copy())
    buf = x.copy()
    same, cache = forward(buf, out=buf)
    assert same is buf
    np.testing.assert_array_equal(same, plain)
    np.testing.assert_array_equal(backward(dout, cache), backward(dout, plain_cache))
