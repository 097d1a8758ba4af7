import numpy as np

from minivae import VAE
from minivae.gradcheck import model_gradcheck


def test_whole_model_gradient_small():
    rng = np.random.default_rng(0)
    model = VAE(6, 3, hidden=(5,), seed=1)
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((2, 4, 3))
    errors = model_gradcheck(model, x, eps, rng=rng)
    assert max(errors.values()) < 1e-6, errors
