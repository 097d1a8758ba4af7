"""Check every identity of the VAE derivation with numbers.

The same as ``python -m minivae verify``; arguments are passed through
(``--seed``, ``--json``, ``--only N ...``, ``--no-details``, ``--plots DIR``; see
``--help``).
Exits non-zero if any identity fails.
"""

from __future__ import annotations

import sys

from minivae.tool.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", *sys.argv[1:]]))
