r"""Exact models and the identities of the VAE derivation, checked with numbers.

Every step of the derivation of the ELBO is an identity that can be checked on a model
whose answer is known in closed form. :mod:`minivae.theory.exact` has two: the
linear-Gaussian model :math:`p(z) = N(0, I)`, :math:`p(x|z) = N(Az + b, \Sigma)`, whose
marginal :math:`N(b, AA^\top + \Sigma)` and Gaussian posterior are exact, and a Gaussian
mixture, whose latent is discrete, so :math:`\log p(x)` is an exact log-sum-exp.
``python -m minivae verify`` checks each identity on one of each (seed 0 by default):
closed forms must agree to 1e-9 relative, Monte Carlo estimates must lie within 4
standard errors of the exact value, and the tests run every identity over random models
and show that a planted bug (a flipped KL sign, a standard deviation taken for a
variance, a factor of two) makes it fail.

The questions the identities answer (the identity numbers in brackets):

* Is the ELBO a lower bound on :math:`\log p(x)`, and by how much? [1: the bound;
  2: the gap is exactly KL(q || p(z|x)); 3: it is tight at the posterior]
* Are the textbook's three forms of the ELBO the same number? [4]
* What goes wrong when the log is moved inside the expectation? [5: Jensen's gap;
  6 and 10: the naive estimator of :math:`\log p(x)` by sampling the prior]
* How does the gradient of :math:`\log p(x)` relate to the ELBO's? [7: Fisher's identity;
  8: they agree at the posterior]
* What does a mean-field (diagonal) q converge to? [9]
* Does the importance-weighted bound approach :math:`\log p(x)` as K grows? [11]
* Are reparameterized and score-function gradients both unbiased, and which is
  noisier? [12]
* Which KL should be minimized, KL(q || p) or KL(p || q)? [13]
* Does maximizing the ELBO pull q toward the prior or toward the posterior? [14]
* What is the ELBO's KL term made of, averaged over the data? [15: ELBO surgery]
* Is there more to low-variance gradients than reparameterization? [16: sticking the
  landing]
* Why do IWAE's encoder gradients get noisier as K grows, and what fixes it? [17:
  signal-to-noise and DReG]
* Does the VAE network code itself compute the exact ELBO? [18]

Where each lives:

* :mod:`minivae.theory.exact`: the exact models;
* :mod:`minivae.theory.identities`: the registry (``@identity(N)``) and identities 1-12;
* :mod:`minivae.theory.questions`: identities 13-17;
* :mod:`minivae.theory.network`: identity 18, the VAE network's own ELBO against the
  exact model;
* :mod:`minivae.theory.plots`: one picture per identity that has one (matplotlib);
* :mod:`minivae.theory.verify`: ``python -m minivae verify`` (``--json`` for every number,
  ``--plots DIR`` for the pictures).

This subpackage imports only the core's numerics, distributions and checks, with one
exception: :mod:`minivae.theory.network` imports :mod:`minivae.vae`, the code it checks.
"""

from . import identities, network, questions  # noqa: F401  (registers identities 1-18)
