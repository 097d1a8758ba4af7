"""``python -m minivae``: the command line (:mod:`minivae.tool.cli`)."""

from .tool.cli import main

raise SystemExit(main())
