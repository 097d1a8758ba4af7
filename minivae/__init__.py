"""minivae: a variational autoencoder in plain NumPy with hand-written, verified gradients."""

from .optim import SGD, Adam
from .params import ParamDict
from .vae import VAE, ELBOTerms

__version__ = "0.1.0"

__all__ = ["VAE", "ELBOTerms", "ParamDict", "Adam", "SGD", "__version__"]
