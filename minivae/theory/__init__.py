"""Exact models and the identities of the VAE derivation, checked with numbers.

* :mod:`minivae.theory.exact`: models whose marginal likelihood and posterior are known
  in closed form (linear-Gaussian, Gaussian mixture);
* :mod:`minivae.theory.identities`: the registry and identities 1-12, each checked on them;
* :mod:`minivae.theory.questions`: identities 13-17, the questions people ask about the
  ELBO (KL direction, prior or posterior, ELBO surgery, STL, IWAE's SNR and DReG);
* :mod:`minivae.theory.network`: identity 18, the VAE network's own ELBO against the
  exact model;
* :mod:`minivae.theory.plots`: one picture per identity that has one (matplotlib);
* :mod:`minivae.theory.verify`: ``python -m minivae verify``.

This subpackage imports only the core's numerics, distributions and checks, with one
exception: :mod:`minivae.theory.network` imports :mod:`minivae.vae`, the code it checks.
"""

from . import identities, network, questions  # noqa: F401  (registers identities 1-18)
