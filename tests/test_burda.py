"""Burda et al.'s recipe: their Adam, schedule, initialization and epoch, against references.

The optimizer reference below is written independently of minivae.optim, per coordinate,
in the way their Theano code runs: every right-hand side is evaluated with the values
*before* the step (Theano applies a function's updates simultaneously), then all are
assigned. The encoder's log-std head is checked by finite differences like every other
gradient.
"""

import math

import numpy as np
import pytest

from minivae import VAE
from minivae.gradcheck import model_gradcheck
from minivae.objectives import iwae_loss_and_grad
from minivae.optim import CHUNK, BurdaAdam
from minivae.tool import burda

A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
B = np.array([1.0, -2.0, 0.5])
THETA0 = np.array([0.7, -0.3, 2.0])


def quadratic_grad(theta):
    return A @ theta - B


def theano_adam_reference(theta, steps, lr, b1, b2, eps, scale):
    """Their optimizers.Adam, one coordinate at a time, with simultaneous updates.

    Their objective is ascended; ours, f, is descended: their gradient is -scale * f'.
    """
    theta = [float(t) for t in theta]
    m = [0.0] * len(theta)
    v = [1.0] * len(theta)  # shared_ones_like
    timestep = 1.0  # theano.shared(np.array(1))
    path = []
    for _ in range(steps):
        g = [-scale * gi for gi in quadratic_grad(np.array(theta))]  # ascent direction
        alpha = lr * math.sqrt(1 - b2**timestep) / (1 - b1**timestep)
        new_theta = [theta[i] + alpha * m[i] / (math.sqrt(v[i]) + eps) for i in range(3)]
        new_m = [b1 * m[i] + (1 - b1) * g[i] for i in range(3)]
        new_v = [b2 * v[i] + (1 - b2) * g[i] ** 2 for i in range(3)]
        theta, m, v, timestep = new_theta, new_m, new_v, timestep + 1
        path.append(list(theta))
    return np.array(path)


def run(opt, steps, theta0=THETA0):
    theta = theta0.copy()
    path = []
    for _ in range(steps):
        opt.step(theta, quadratic_grad(theta))
        path.append(theta.copy())
    return np.array(path)


@pytest.mark.parametrize("lr, b1, b2, eps, scale", [
    (1e-3, 0.99, 0.999, 1e-4, 20.0), (0.05, 0.9, 0.99, 1e-4, 1.0), (0.01, 0.5, 0.9, 1e-2, 3.0)])
def test_burda_adam_follows_their_update(lr, b1, b2, eps, scale):
    path = run(BurdaAdam(lr=lr, beta1=b1, beta2=b2, eps=eps, grad_scale=scale), 300)
    ref = theano_adam_reference(THETA0, 300, lr, b1, b2, eps, scale)
    np.testing.assert_allclose(path, ref, rtol=1e-12, atol=1e-14)


def test_burda_adam_first_step_does_not_move_and_second_uses_the_first_gradient():
    theta = THETA0.copy()
    opt = BurdaAdam(lr=0.1, grad_scale=20.0)
    g1 = quadratic_grad(theta)
    opt.step(theta, g1)
    np.testing.assert_array_equal(theta, THETA0)  # m_0 = 0
    opt.step(theta, quadratic_grad(theta))
    # step 2 uses m_1 = (1 - b1) 20 g1 and v_1 = b2 + (1 - b2) (20 g1)^2, at t = 2
    m1, v1 = 0.01 * 20 * g1, 0.999 + 0.001 * (20 * g1) ** 2
    alpha = 0.1 * math.sqrt(1 - 0.999**2) / (1 - 0.99**2)
    np.testing.assert_allclose(theta, THETA0 - alpha * m1 / (np.sqrt(v1) + 1e-4), rtol=1e-14)


def test_burda_adam_chunks_are_bit_identical_and_state_round_trips():
    rng = np.random.default_rng(0)
    n = 2 * CHUNK + 123  # three chunks, the last one partial
    theta0 = rng.standard_normal(n).astype(np.float32)
    grads = rng.standard_normal((6, n)).astype(np.float32)
    whole, chunked = theta0.copy(), theta0.copy()
    ref = BurdaAdam(lr=1e-2, grad_scale=20.0)
    ref.m, ref.v = np.zeros(n, np.float32), np.ones(n, np.float32)
    opt = BurdaAdam(lr=1e-2, grad_scale=20.0)
    for i, g in enumerate(grads):
        ref.step_count += 1
        t = ref.step_count
        alpha = ref.lr * math.sqrt(1 - ref.beta2**t) / (1 - ref.beta1**t)
        ref._update(whole, g, ref.m, ref.v, np.empty(n, np.float32), alpha)  # one piece
        opt.step(chunked, g)
        if i == 2:  # save, rebuild, continue: the same trajectory
            state = opt.state_dict()
            opt = BurdaAdam(lr=1e-2, grad_scale=20.0)
            opt.load_state_dict(state)
    np.testing.assert_array_equal(chunked, whole)
    assert chunked.dtype == np.float32 and opt.m.dtype == np.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0}, "lr"), ({"beta1": 1.0}, "beta1"), ({"eps": float("inf")}, "eps"),
    ({"grad_scale": -1}, "grad_scale")])
def test_burda_adam_refuses_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BurdaAdam(**kwargs)


def test_schedule_is_theirs():
    lrs = [burda.stage_learning_rate(i) for i in range(8)]
    np.testing.assert_allclose(lrs, [1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4],
                               rtol=1e-12)
    rows = list(burda.schedule())
    assert len(rows) == burda.n_epochs() == 3280
    assert [e for _, e, _ in rows] == list(range(1, 3281))
    counts = np.bincount([s for s, _, _ in rows])
    assert counts.tolist() == [3**i for i in range(8)]
    with pytest.raises(ValueError, match="stage"):
        burda.stage_learning_rate(8)


def test_initialization_is_theirs():
    rng = np.random.default_rng(1)
    x = (rng.random((50, 784)) < rng.random(784)).astype(np.float32)
    model = burda.make_model(x)
    assert model.encoder_scale == "log_std" and model.dtype == np.float32
    assert model.encoder.sizes == (784, 200, 200, 100)
    assert model.decoder.sizes == (50, 200, 200, 784)
    w0 = np.random.RandomState(123).uniform(-np.sqrt(6 / 984), np.sqrt(6 / 984), (784, 200))
    np.testing.assert_array_equal(model.params["encoder.0.W"], w0.astype(np.float32))
    head = np.random.RandomState(123).uniform(-np.sqrt(6 / 250), np.sqrt(6 / 250), (200, 50))
    np.testing.assert_array_equal(model.params["encoder.2.W"][:, :50], head.astype(np.float32))
    np.testing.assert_array_equal(model.params["encoder.2.W"][:, 50:], head.astype(np.float32))
    np.testing.assert_array_equal(model.params["encoder.1.W"], model.params["decoder.1.W"])
    for name in ("encoder.0.b", "encoder.1.b", "encoder.2.b", "decoder.0.b", "decoder.1.b"):
        assert not model.params[name].any()
    p = np.clip(x.astype(np.float64).mean(axis=0), 0.001, 0.999)
    np.testing.assert_allclose(model.params["decoder.2.b"], np.log(p / (1 - p)), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_epoch_is_their_loop(k):
    """Fixed order, MC ELBO (k = 1) or IWAE, their Adam: replayed by hand, step by step."""
    rng = np.random.default_rng(2)
    x = (rng.random((47, 12)) < 0.4).astype(np.float64)  # 47 // 10 = 4 batches, 7 dropped
    model = VAE(12, 3, hidden=(5,), activation="tanh", encoder_scale="log_std", seed=3)
    twin = VAE.from_config(model.config())
    opt, opt_twin = BurdaAdam(lr=1e-2, grad_scale=10), BurdaAdam(lr=1e-2, grad_scale=10)
    loss = burda.train_epoch(model, opt, x, np.random.default_rng(4), k=k, batch_size=10)
    noise, losses = np.random.default_rng(4), []
    for i in range(4):
        xb = x[10 * i:10 * (i + 1)]
        eps = noise.standard_normal((k, 10, 3))
        if k == 1:
            value, grads = twin.loss_and_grad(xb, eps, kl="mc")
        else:
            value, grads = iwae_loss_and_grad(twin, xb, eps)
        opt_twin.step(twin.flat, grads.flat)
        losses.append(value)
    np.testing.assert_array_equal(model.flat, twin.flat)
    assert loss == pytest.approx(np.mean(losses), rel=1e-14)
    assert opt.step_count == 4


@pytest.mark.parametrize("objective", ["analytic", "mc", "iwae"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-hetero"])
def test_log_std_head_gradient(objective, likelihood):
    rng = np.random.default_rng(5)
    model = VAE(5, 2, hidden=(4,), likelihood=likelihood, activation="tanh",
                encoder_scale="log_std", seed=6)
    x = ((rng.random((3, 5)) < 0.5).astype(np.float64) if likelihood == "bernoulli"
         else rng.standard_normal((3, 5)))
    eps = rng.standard_normal((2, 3, 2))
    if objective == "iwae":
        errors = model_gradcheck(model, x, eps, rng=rng, objective=iwae_loss_and_grad)
    else:
        errors = model_gradcheck(model, x, eps, rng=rng, kl=objective)
    assert max(errors.values()) <= 1e-6, errors


def test_log_std_head_is_the_same_model_as_log_var():
    """Doubling the log_var head's weights of a log_std model gives the log_var model."""
    rng = np.random.default_rng(7)
    a = VAE(6, 2, hidden=(4,), encoder_scale="log_std", seed=8)
    b = VAE(6, 2, hidden=(4,), seed=8)
    b.set_flat(a.get_flat())
    for name in ("encoder.1.W", "encoder.1.b"):
        b.params[name][..., 2:] *= 2
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((2, 3, 2))
    assert a.loss(x, eps) == pytest.approx(b.loss(x, eps), rel=1e-14)
    assert VAE.from_config(a.config()).encoder_scale == "log_std"
    with pytest.raises(ValueError, match="encoder_scale"):
        VAE(6, 2, encoder_scale="std")


def test_train_optimizer_burda_adam_follows_their_update(tmp_path, capsys):
    """``minivae train --optimizer burda-adam``: two epochs (20 steps, the second after a
    resume) replayed by hand with the Theano-style reference update, on the gradient of
    the minibatch sum (grad_scale = --batch-size)."""
    from minivae.tool import cli
    from minivae.tool.checkpoint import load_checkpoint
    from minivae.tool.train import TrainConfig, build_model, load_data

    run = tmp_path / "run"
    args = ["--dataset", "synthetic", "--hidden", "6", "--latent-dim", "2", "--batch-size",
            "200", "--train-eval-size", "200", "--seed", "3", "--dtype", "float64",
            "--optimizer", "burda-adam", "--lr", "0.01", "--no-pictures"]
    assert cli.main(["train", *args, "--epochs", "1", "--run-dir", str(run)]) == 0
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(run / "checkpoints" / "latest.npz")

    config = TrainConfig(dataset="synthetic", hidden=[6], latent_dim=2, batch_size=200,
                         seed=3, dtype="float64", optimizer="burda-adam", lr=0.01)
    x_train = load_data(config).train
    model = build_model(config, x_train.shape[1])
    rng = np.random.default_rng([config.seed, 1])  # the run's stream: order, then eps
    theta = model.get_flat()
    m, v, timestep = np.zeros_like(theta), np.ones_like(theta), 1
    for _ in range(2):
        order = rng.permutation(len(x_train))
        for i in range(len(x_train) // 200):
            xb = x_train[order[200 * i:200 * (i + 1)]]
            model.set_flat(theta)
            _, grads = model.loss_and_grad(xb, model.sample_eps(rng, 200, 1))
            g = -200 * grads.flat  # their objective: the batch sum, ascended
            alpha = 0.01 * np.sqrt(1 - 0.999**timestep) / (1 - 0.99**timestep)
            theta, m, v = (theta + alpha * m / (np.sqrt(v) + 1e-4),
                           0.99 * m + 0.01 * g, 0.999 * v + 0.001 * g * g)
            timestep += 1
    assert timestep == 21
    np.testing.assert_allclose(ckpt.params, theta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ckpt.optimizer_state["v"], v, rtol=1e-10)
    assert np.abs(ckpt.params - model.get_flat()).max() > 1e-4  # the last step moved
