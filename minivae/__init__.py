"""minivae: a variational autoencoder in plain NumPy with hand-written, verified gradients."""

from .optim import SGD, Adam, BurdaAdam
from .params import ParamDict
from .vae import VAE, ELBOTerms, Forward

__version__ = "0.1.0"

__all__ = ["VAE", "ELBOTerms", "Forward", "ParamDict", "Adam", "BurdaAdam", "SGD",
           "__version__"]
