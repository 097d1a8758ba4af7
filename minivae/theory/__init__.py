"""Exact models and the identities of the VAE derivation, checked with numbers.

* :mod:`minivae.theory.exact`: models whose marginal likelihood and posterior are known
  in closed form (linear-Gaussian, Gaussian mixture);
* :mod:`minivae.theory.identities`: the numbered identities, each checked on them;
* :mod:`minivae.theory.verify`: ``python -m minivae verify``.

This subpackage imports only the core's numerics and distributions.
"""
