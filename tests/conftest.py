"""Shared test configuration: BLAS threads and hypothesis profiles."""

import os

# The tests multiply tiny matrices, where a multithreaded BLAS only adds synchronization
# (measured here: a 100x200 by 200x64 product took 5 ms with two OpenBLAS threads on a busy
# machine, 0.15 ms with one). Set before NumPy is first imported; users' runs are unaffected.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from hypothesis import HealthCheck, settings  # noqa: E402  (after the BLAS variables)

# CI must never be flaky: derandomized examples, no per-example deadline.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=10,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
