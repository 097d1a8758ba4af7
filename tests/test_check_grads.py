"""check_grads, the entry point for checking your own gradients: it passes right gradients,
catches a factor of two in one entry, and refuses what it cannot check honestly."""

import numpy as np
import pytest

from minivae.gradcheck import GradCheck, check_grads


def kl(v):
    """KL(N(mu, e^lv) || N(0, 1)), v = (mu, lv)."""
    mu, lv = v
    return 0.5 * (mu**2 + np.exp(lv) - 1 - lv)


def kl_grad(v):
    mu, lv = v
    return np.array([mu, 0.5 * np.expm1(lv)])


def test_a_right_gradient_passes_tightly():
    result = check_grads(kl, kl_grad, np.array([0.3, -0.7]))
    assert result and isinstance(result, GradCheck)
    assert result.worst_error < 1e-9 and result.n_directions == 10 and result.rtol == 1e-6
    assert str(result).startswith("gradient check passed: worst relative error")


@pytest.mark.parametrize("entry", [0, 1])
def test_a_factor_of_two_in_any_entry_fails(entry):
    def wrong(v):
        g = kl_grad(v)
        g[entry] *= 2
        return g

    result = check_grads(kl, wrong, np.array([0.3, -0.7]))
    assert not result and result.worst_error > 1e-2
    assert "FAILED" in repr(result)  # what pytest prints for a failing ``assert result``


def test_any_shape_and_array_like_inputs():
    w = np.random.default_rng(0).standard_normal((3, 4))
    assert check_grads(lambda a: float(np.sum(np.tanh(a) ** 2)),
                       lambda a: 2 * np.tanh(a) * (1 - np.tanh(a) ** 2), w)
    assert check_grads(lambda a: float(a @ a), lambda a: 2 * a, [1.0, 2.0, 3.0])


def test_the_same_seed_gives_the_same_result():
    a = check_grads(kl, kl_grad, np.array([1.0, 0.2]), seed=3)
    b = check_grads(kl, kl_grad, np.array([1.0, 0.2]), seed=3)
    assert a.worst_error == b.worst_error


def test_what_it_refuses():
    x = np.array([0.3, -0.7])
    with pytest.raises(TypeError, match="float64"):
        check_grads(kl, kl_grad, x.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        check_grads(kl, lambda v: kl_grad(v)[:1], x)
    with pytest.raises(ValueError, match="finite scalar"):
        check_grads(lambda v: v * 2, kl_grad, x)
    with pytest.raises(ValueError, match="n_directions"):
        check_grads(kl, kl_grad, x, n_directions=0)
    with pytest.raises(ValueError, match="rtol"):
        check_grads(kl, kl_grad, x, rtol=float("nan"))
