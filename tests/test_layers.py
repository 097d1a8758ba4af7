"""Finite-difference checks of every layer and activation, full Jacobian-vector products.

Fourth-order central differences in float64 with h = 1e-3: truncation ~h^4 and
roundoff ~1e-13 |f|, so a relative error of 1e-6 (``grad_error``) leaves ample
room and still catches any factor-of-two bug.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from minivae.gradcheck import grad_error, numerical_gradient, numerical_gradient_array
from minivae.layers import (
    ACTIVATIONS,
    affine_backward,
    affine_forward,
    get_activation,
    sigmoid,
    softplus,
)
from minivae.mlp import MLP
from minivae.params import ParamDict

TOL = 1e-6
H = 1e-3

shapes = st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))
seeds = st.integers(0, 2**32 - 1)


@given(shape=shapes, seed=seeds)
def test_affine_gradients(shape, seed):
    n, d_in, d_out = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out)
    dout = rng.standard_normal((n, d_out))
    out, cache = affine_forward(x, W, b)
    np.testing.assert_allclose(out, x @ W + b, rtol=1e-14, atol=1e-14)
    dx, dW, db = affine_backward(dout, cache)

    def f():
        return affine_forward(x, W, b)[0]

    assert grad_error(dx, numerical_gradient_array(f, x, dout, H)) < TOL
    assert grad_error(dW, numerical_gradient_array(f, W, dout, H)) < TOL
    assert grad_error(db, numerical_gradient_array(f, b, dout, H)) < TOL


def test_affine_backward_overwrites_out_buffers():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    dout = rng.standard_normal((4, 2))
    _, cache = affine_forward(x, W, b)
    dW_buf = np.full((3, 2), 123.0)
    db_buf = np.full(2, -7.0)
    _, dW, db = affine_backward(dout, cache, dW_out=dW_buf, db_out=db_buf)
    assert dW is dW_buf and db is db_buf
    np.testing.assert_allclose(dW_buf, x.T @ dout, rtol=1e-14)
    np.testing.assert_allclose(db_buf, dout.sum(0), rtol=1e-14)
    dx, _, _ = affine_backward(dout, cache, need_dx=False)
    assert dx is None


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=shapes, seed=seeds, scale=st.floats(0.1, 4.0))
def test_activation_gradients(name, shape, seed, scale):
    forward, backward = get_activation(name)
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal(shape[:2])
    # Finite differences straddling the kink of (leaky) ReLU at 0 are meaningless.
    assume(np.min(np.abs(x)) > 3 * H)
    dout = rng.standard_normal(x.shape)
    _, cache = forward(x)
    dx = backward(dout, cache)
    num = numerical_gradient_array(lambda: forward(x)[0], x, dout, H)
    assert grad_error(dx, num) < TOL


@pytest.mark.parametrize(
    "name, reference",
    [
        ("relu", lambda x: np.maximum(x, 0)),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x)),
        ("tanh", np.tanh),
        ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
        ("softplus", lambda x: np.log1p(np.exp(x))),
    ],
)
def test_activation_values(name, reference):
    x = np.linspace(-8, 8, 101)
    np.testing.assert_allclose(get_activation(name)[0](x)[0], reference(x), rtol=1e-13, atol=1e-15)


def test_softplus_and_sigmoid_are_stable_at_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        sp = softplus(x)
        sg = sigmoid(x)
    np.testing.assert_allclose(sp, [0.0, np.exp(-50.0), np.log(2.0), 50.0, 1000.0], rtol=1e-15)
    np.testing.assert_allclose(sg, [0.0, np.exp(-50.0) / (1 + np.exp(-50.0)), 0.5, 1.0, 1.0],
                               rtol=1e-15, atol=0)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        get_activation("swish")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@given(
    widths=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    d_in=st.integers(1, 4),
    d_out=st.integers(1, 4),
    n=st.integers(1, 4),
    seed=seeds,
)
def test_mlp_gradients_full(activation, widths, d_in, d_out, n, seed):
    """Every parameter and input entry of an MLP, by full central differences."""
    mlp = MLP((d_in, *widths, d_out), activation, prefix="net")
    rng = np.random.default_rng(seed)
    params = ParamDict.zeros(mlp.param_specs(), np.float64)
    mlp.init_params(params, rng)
    x = rng.standard_normal((n, d_in))
    dout = rng.standard_normal((n, d_out))
    _, caches = mlp.forward(params, x)
    # keep finite differences away from ReLU kinks
    pre = [c[0][0] @ c[0][1] + params[b] for c, (_, b) in zip(caches, mlp.names, strict=True)]
    assume(all(np.min(np.abs(a)) > 0.05 for a in pre))
    grads = params.zeros_like()
    grads.flat[:] = np.nan  # every entry must be overwritten
    dx = mlp.backward(params, dout, caches, grads)

    def f():
        return mlp.forward(params, x)[0]

    assert grad_error(dx, numerical_gradient_array(f, x, dout, H)) < TOL
    num = numerical_gradient(lambda: float(np.sum(f() * dout)), params.flat, H)
    assert grad_error(grads.flat, num) < TOL


def test_mlp_param_names_and_order():
    mlp = MLP((3, 5, 2), "tanh", prefix="encoder")
    assert mlp.param_specs() == [
        ("encoder.0.W", (3, 5)),
        ("encoder.0.b", (5,)),
        ("encoder.1.W", (5, 2)),
        ("encoder.1.b", (2,)),
    ]
    with pytest.raises(ValueError, match="positive integer"):
        MLP((3, 0, 2))
