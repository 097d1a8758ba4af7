"""Optimizers: reference trajectories on a small quadratic, state round trips, errors.

The references below are written independently of minivae.optim, as the plain
per-coordinate formulas of Kingma & Ba (2015, Algorithm 1) and of heavy-ball
momentum, so the in-place vectorized updates are checked against the papers'
equations, step by step.
"""

import math

import numpy as np
import pytest

from minivae.optim import SGD, Adam, BurdaAdam, make_optimizer

A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
B = np.array([1.0, -2.0, 0.5])
THETA0 = np.array([0.7, -0.3, 2.0])


def quadratic_grad(theta):
    """Gradient of f(theta) = 0.5 theta^T A theta - b^T theta."""
    return A @ theta - B


def adam_reference(theta, steps, lr, b1, b2, eps):
    theta = [float(t) for t in theta]
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    path = []
    for t in range(1, steps + 1):
        g = quadratic_grad(np.array(theta))
        for i in range(len(theta)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            theta[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        path.append(list(theta))
    return np.array(path)


def run(opt, steps, dtype=np.float64):
    theta = THETA0.astype(dtype).copy()
    path = []
    for _ in range(steps):
        opt.step(theta, quadratic_grad(theta).astype(dtype))
        path.append(theta.copy())
    return np.array(path)


@pytest.mark.parametrize("lr, b1, b2, eps", [(1e-2, 0.9, 0.999, 1e-8), (0.1, 0.5, 0.9, 1e-4),
                                             (1e-2, 0.0, 0.9, 1e-8)])
def test_adam_follows_the_reference_trajectory(lr, b1, b2, eps):
    path = run(Adam(lr=lr, beta1=b1, beta2=b2, eps=eps), 200)
    np.testing.assert_allclose(path, adam_reference(THETA0, 200, lr, b1, b2, eps),
                               rtol=1e-12, atol=1e-13)


def test_adam_first_step_is_lr_times_sign_of_gradient():
    """With bias correction by the step count, step 1 is lr * g / (|g| + eps) exactly.

    Correcting by the epoch (or not at all) makes the first step 10x to 30x smaller:
    this pins the bias correction down.
    """
    theta = THETA0.copy()
    g = quadratic_grad(theta)
    Adam(lr=0.01, eps=0.0 + 1e-12).step(theta, g.copy())
    np.testing.assert_allclose(THETA0 - theta, 0.01 * g / (np.abs(g) + 1e-12), rtol=1e-12)


def test_adam_converges_to_the_minimizer():
    path = run(Adam(lr=0.05), 3000)
    np.testing.assert_allclose(path[-1], np.linalg.solve(A, B), atol=1e-6)


def test_sgd_momentum_follows_the_reference_trajectory():
    lr, mom = 0.1, 0.8
    theta, vel = THETA0.copy(), np.zeros(3)
    expected = []
    for _ in range(50):
        vel = mom * vel + quadratic_grad(theta)
        theta = theta - lr * vel
        expected.append(theta)
    np.testing.assert_allclose(run(SGD(lr=lr, momentum=mom), 50), np.array(expected),
                               rtol=1e-13, atol=1e-14)
    plain = run(SGD(lr=lr), 1)[0]
    np.testing.assert_allclose(plain, THETA0 - lr * quadratic_grad(THETA0), rtol=1e-15)


@pytest.mark.parametrize("make", [lambda: Adam(lr=0.05), lambda: SGD(lr=0.1, momentum=0.9)])
def test_state_round_trip_continues_identically(make):
    a = make()
    theta = THETA0.copy()
    for _ in range(5):
        a.step(theta, quadratic_grad(theta))
    b = make()
    b.load_state_dict({k: np.array(v) for k, v in a.state_dict().items()})
    theta_b = theta.copy()
    for _ in range(5):
        a.step(theta, quadratic_grad(theta))
        b.step(theta_b, quadratic_grad(theta_b))
    np.testing.assert_array_equal(theta, theta_b)
    assert a.step_count == b.step_count == 10


def test_float32_state_stays_float32():
    opt = Adam(lr=1e-2)
    path = run(opt, 3, dtype=np.float32)
    assert path.dtype == np.float32 and opt.m.dtype == np.float32 and opt.v.dtype == np.float32


def test_optimizer_errors():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        Adam(lr=0)
    with pytest.raises(ValueError, match="beta2 must be in"):
        Adam(beta2=1.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        SGD(momentum=-0.1)
    with pytest.raises(ValueError, match=r"must be one of \('adam', 'sgd', 'burda-adam'\)"):
        make_optimizer("rmsprop", 1e-3)
    burda = make_optimizer("burda-adam", 1e-3, grad_scale=20)
    assert isinstance(burda, BurdaAdam) and burda.grad_scale == 20 and burda.beta1 == 0.99
    theta = np.zeros(3)
    with pytest.raises(ValueError, match="does not match parameters"):
        Adam().step(theta, np.zeros(4))
    with pytest.raises(TypeError, match="dtype float32 does not match"):
        Adam().step(theta, np.zeros(3, dtype=np.float32))


def test_adam_matches_torch_if_available():
    torch = pytest.importorskip("torch")
    theta_t = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    opt_t = torch.optim.Adam([theta_t], lr=0.02, betas=(0.8, 0.99), eps=1e-6)
    A_t, B_t = torch.tensor(A), torch.tensor(B)
    ours = run(Adam(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6), 100)
    for i in range(100):
        opt_t.zero_grad()
        (0.5 * theta_t @ A_t @ theta_t - B_t @ theta_t).backward()
        opt_t.step()
        np.testing.assert_allclose(ours[i], theta_t.detach().numpy(), rtol=1e-10, atol=1e-12)
