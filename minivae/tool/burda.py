r"""Burda, Grosse & Salakhutdinov's (2015) training recipe, as their released code runs it.

Their one-stochastic-layer MNIST model is 784-200-200-50 with tanh hidden units, a
Bernoulli decoder and a Gaussian encoder whose standard deviation is the exponential of
a linear layer. What their code does, read in its source (``experiments.py``,
``optimizers.py``, ``nnet.py``, ``iwae.py``, ``train.py``, ``datasets.py``), and what
this module reproduces:

* **optimizer**: :class:`minivae.optim.BurdaAdam` (beta1 = 0.99, v starts at ones,
  epsilon 1e-4 on :math:`\sqrt v`, simultaneous updates, the gradient of the *sum* over
  the minibatch);
* **schedule** (:func:`schedule`): stage i = 0..7 runs :math:`3^i` epochs at learning
  rate :math:`10^{-4}\,\mathrm{round}(10^{1-i/7}, 1)`, 3,280 epochs in all;
* **minibatches**: 20 datapoints, visited in the *same fixed order* every epoch (no
  shuffling), 2,500 steps per epoch on the 50,000 training images (:func:`train_epoch`);
* **initialization** (:func:`init_params`): every weight matrix
  :math:`U(-\sqrt{6/(n_{in}+n_{out})}, +\sqrt{6/(n_{in}+n_{out})})` (Glorot & Bengio)
  drawn from a *fresh* ``numpy.random.RandomState(123)`` for each layer (so layers of the
  same shape, and the encoder's mean and log-std heads, start equal), biases zero, and the
  decoder's output bias at the logits of the training set's pixel means, clipped to
  [0.001, 0.999];
* **encoder scale**: ``encoder_scale="log_std"`` (:math:`\sigma = e^{s}`, log_var = 2s);
* **objective**: the Monte Carlo ELBO :math:`\log p(x|z) + \log p(z) - \log q(z|x)`
  with its full reparameterized gradient for K = 1 (``kl="mc"``, not the closed-form KL),
  the IWAE bound for K > 1;
* **evaluation**: test log p(x) by importance sampling with 5,000 samples.

Their reported static-binarization numbers (the README of their code): test log p(x)
-88.71 for the VAE (K = 1), -87.63 for IWAE K = 5, -87.10 for IWAE K = 50.
"""

from __future__ import annotations

import numpy as np

from ..objectives import iwae_loss_and_grad
from ..optim import BurdaAdam
from ..vae import VAE

LATENT_DIM = 50
HIDDEN = (200, 200)
BATCH_SIZE = 20
N_STAGES = 8
IS_SAMPLES = 5000
#: the seed their ``nnet.Linear.random`` gives a fresh RandomState for every layer
INIT_SEED = 123
#: clipping of the pixel means before the logit, as in their ``get_train_bias_np``
BIAS_CLIP = (0.001, 0.999)


def stage_learning_rate(i: int) -> float:
    r"""Learning rate of stage i = 0..7: :math:`10^{-4}\cdot\mathrm{round}(10^{1-i/7}, 1)`.

    1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4 (Python's ``round``, as
    their code).
    """
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < N_STAGES:
        raise ValueError(f"stage must be an integer in 0..{N_STAGES - 1}, got {i!r}")
    return 1e-4 * round(10.0 ** (1 - i / 7.0), 1)


def schedule():
    """Yield ``(stage, epoch, lr)`` for all 3,280 epochs: stage i runs 3**i epochs."""
    epoch = 0
    for i in range(N_STAGES):
        lr = stage_learning_rate(i)
        for _ in range(3**i):
            epoch += 1
            yield i, epoch, lr


def n_epochs() -> int:
    """3,280: the length of the whole schedule."""
    return sum(3**i for i in range(N_STAGES))


def glorot_uniform(n_in: int, n_out: int) -> np.ndarray:
    r"""Their layer initialization: :math:`U(\pm\sqrt{6/(n_{in}+n_{out})})`, shape (n_in, n_out),
    from a fresh ``numpy.random.RandomState(123)`` (a local legacy generator; NumPy's
    global state is not touched), in float64."""
    scale = np.sqrt(6.0 / (n_in + n_out))
    return np.random.RandomState(INIT_SEED).uniform(-scale, scale, size=(n_in, n_out))


def output_bias(x_train: np.ndarray) -> np.ndarray:
    r"""Logits of the training set's pixel means, clipped to [0.001, 0.999]:
    :math:`\log\frac{p}{1-p}`, the decoder output bias they start from."""
    p = np.clip(np.mean(x_train, axis=0, dtype=np.float64), *BIAS_CLIP)
    return np.log(p) - np.log1p(-p)


def make_model(x_train: np.ndarray, dtype=np.float32) -> VAE:
    """Their 784-200-200-50 tanh model, initialized as their code initializes it."""
    model = VAE(x_train.shape[1], LATENT_DIM, hidden=HIDDEN, likelihood="bernoulli",
                activation="tanh", dtype=dtype, encoder_scale="log_std")
    init_params(model, x_train)
    return model


def init_params(model: VAE, x_train: np.ndarray) -> None:
    """Overwrite ``model``'s parameters with their initialization (see the module docstring).

    The encoder's last layer holds both heads side by side, columns [:Z] the mean and
    [Z:] the log standard deviation; each head is its own layer in their code, so each
    half gets its own fresh draw (the two halves are therefore equal).
    """
    Z = model.latent_dim
    for mlp in (model.encoder, model.decoder):
        last = mlp.n_layers - 1
        for i, ((w, b), n_in, n_out) in enumerate(zip(mlp.names, mlp.sizes[:-1],
                                                      mlp.sizes[1:], strict=True)):
            if mlp is model.encoder and i == last:
                head = glorot_uniform(n_in, Z)
                model.params[w][...] = np.concatenate([head, head], axis=1)
            else:
                model.params[w][...] = glorot_uniform(n_in, n_out)
            model.params[b][...] = 0.0
    model.params[model.decoder.names[-1][1]][...] = output_bias(x_train)


def make_optimizer(batch_size: int = BATCH_SIZE) -> BurdaAdam:
    """Their Adam, in the units of their objective (the sum over a minibatch)."""
    return BurdaAdam(lr=stage_learning_rate(0), grad_scale=batch_size)


def train_epoch(model: VAE, optimizer, x_train: np.ndarray, rng: np.random.Generator,
                k: int = 1, batch_size: int = BATCH_SIZE, grads=None) -> float:
    """One epoch as their ``train.py`` runs it; returns the mean training loss (nats).

    Minibatch i is rows ``[i*B, (i+1)*B)`` in the stored order (no shuffling; a last
    partial batch is dropped, as their integer division drops it). K = 1 trains the
    Monte Carlo ELBO (``kl="mc"``), K > 1 the IWAE bound; eps of shape (K, B, Z) is
    drawn from ``rng`` for each step.
    """
    grads = model.new_grad() if grads is None else grads
    n_batches = len(x_train) // batch_size
    if n_batches < 1:
        raise ValueError(f"the training set ({len(x_train)} points) is smaller than one "
                         f"batch of {batch_size}")
    total = 0.0
    for i in range(n_batches):
        xb = x_train[i * batch_size:(i + 1) * batch_size]
        eps = model.sample_eps(rng, batch_size, k)
        if k == 1:
            loss, grads = model.loss_and_grad(xb, eps, kl="mc", out=grads)
        else:
            loss, grads = iwae_loss_and_grad(model, xb, eps, out=grads)
        if not np.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {i + 1} of the epoch")
        optimizer.step(model.flat, grads.flat)
        total += loss
    return total / n_batches
