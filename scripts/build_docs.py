#!/usr/bin/env python
"""Build minivae's reference site (static HTML) from the README and the package's docstrings.

    pip install -e ".[docs]"
    python scripts/build_docs.py            # writes build/docs/index.html

There are no documentation sources besides the package itself: this script writes a
Sphinx project into ``build/docs-src/`` and builds it into ``build/docs/`` with
warnings as errors (``--keep-warnings`` turns that off). The pages:

* **index**: ``README.md`` (links to package files are pointed at the pages below);
* **reading**: the docstring of :mod:`minivae`, the code in data-flow order;
* **theory**: the docstring of :mod:`minivae.theory`, then every identity with its
  docstring, the numbers ``minivae verify`` prints (computed during the build: they are
  deterministic), and its picture when matplotlib is installed;
* **gradients**: the docstring of :mod:`minivae.gradcheck` (checking your own gradients);
* **training**: the docstring of :mod:`minivae.tool` and the ``--help`` of every command;
* **results**: every report under ``scripts/results/`` (each is the output of the command
  named on its first line, with machine and date);
* **api**: every module's functions and classes, every equation rendered by MathJax
  (served locally, so the site works offline).

A docstring used as a page keeps its section titles there; in the API reference it
is shortened to its first paragraph and a link to the page.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: page name -> (title, module whose docstring is the page)
DOCSTRING_PAGES = {
    "reading": ("Reading the code", "minivae"),
    "gradients": ("Checking gradients", "minivae.gradcheck"),
    "training": ("Training", "minivae.tool"),
}
#: files the README may link to, and the page each link should open in the site (a source
#: file name, which MyST resolves to the page)
README_LINKS = {
    "minivae/__init__.py": "reading.rst",
    "minivae/theory/__init__.py": "theory.rst",
    "minivae/gradcheck.py": "gradients.rst",
    "minivae/tool/__init__.py": "training.rst",
    "scripts/results/": "results.rst",
}
#: modules documented in the API reference, in reading order
API_MODULES = [
    "minivae.numerics", "minivae.layers", "minivae.params", "minivae.mlp",
    "minivae.distributions", "minivae.likelihoods", "minivae.vae", "minivae.objectives",
    "minivae.gaps", "minivae.optim", "minivae.gradcheck", "minivae.checks",
    "minivae.theory.exact", "minivae.theory.identities", "minivae.theory.questions",
    "minivae.theory.network", "minivae.theory.plots", "minivae.theory.verify",
    "minivae.tool.data", "minivae.tool.train", "minivae.tool.rundir", "minivae.tool.files",
    "minivae.tool.memory", "minivae.tool.checkpoint", "minivae.tool.epoch_pictures",
    "minivae.tool.pixelfont",
    "minivae.tool.evaluate", "minivae.tool.diagnostics", "minivae.tool.figures",
    "minivae.tool.burda", "minivae.tool.cli",
]
PAGE_OF_MODULE = {module: page for page, (_, module) in DOCSTRING_PAGES.items()}
PAGE_OF_MODULE["minivae.theory"] = "theory"

CONF = '''\
"""Sphinx configuration, written by scripts/build_docs.py (do not edit)."""
import minivae

project = "minivae"
copyright = "2026, the minivae authors"
release = version = minivae.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx-mathjax-offline", "myst_parser"]
source_suffix = {{".rst": "restructuredtext", ".md": "markdown"}}
html_theme = "furo"
html_title = "minivae " + version
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
# literal blocks are outputs, tables and paths, not Python: no highlighting unless a block
# names its language
highlight_language = "none"
PAGE_OF_MODULE = {page_of_module!r}


def shorten_page_docstrings(app, what, name, obj, options, lines):
    """A module docstring that is a page of its own appears here as its first paragraph."""
    if what == "module" and name in PAGE_OF_MODULE:
        first = []
        for line in lines:
            if not line.strip():
                break
            first.append(line)
        lines[:] = first + ["", f"The rest of this docstring is the page "
                            f":doc:`{{PAGE_OF_MODULE[name]}}`.", ""]


def setup(app):
    app.connect("autodoc-process-docstring", shorten_page_docstrings)
'''


def heading(title: str, char: str = "=") -> str:
    return f"{title}\n{char * len(title)}\n\n"


def literal(text: str) -> str:
    """A reST literal block."""
    return "::\n\n" + textwrap.indent(text.rstrip() + "\n", "    ") + "\n"


def docstring_page(title: str, module: str) -> str:
    doc = importlib.import_module(module).__doc__ or ""
    body = textwrap.dedent(doc.split("\n", 1)[1] if "\n" in doc else "").strip()
    # the docstring's own first title, if any, would repeat the page title
    body = re.sub(r"\A[^\n]+\n=+\n", "", body).strip()
    # the title over- and underlined: a style of its own, so that the docstring's "====="
    # sections become sections of this page, not pages beside it
    title = f"{'=' * len(title)}\n{heading(title)}"
    return title + f".. currentmodule:: {module}\n\n" + body + "\n"


def index_page() -> str:
    text = (ROOT / "README.md").read_text()
    for target, page in README_LINKS.items():
        text = text.replace(f"]({target})", f"]({page})")
    # a link to one report opens the results page, where the reports are in name order
    text = re.sub(r"\]\(scripts/results/[\w-]+\.txt\)", "](results.rst)", text)
    toc = "\n".join(["", "```{toctree}", ":hidden:", ":maxdepth: 2", "",
                     *DOCSTRING_PAGES, "theory", "results", "api", "```", ""])
    return text + toc


def theory_page(plots_dir: Path | None) -> str:
    from minivae.theory import identities, verify

    page = docstring_page("Theory: the identities, checked with numbers", "minivae.theory")
    results = identities.run_all(seed=0)
    page += "\n" + heading("What ``minivae verify`` prints", "-")
    page += "Computed while this page was built (seed 0; the same numbers every time):\n\n"
    page += literal(verify.format_table(results))
    pictures = _theory_pictures(results, plots_dir)
    for result in results:
        check = identities.IDENTITIES[result.number]
        page += heading(f"{result.number}. {result.name}", "-")
        # documented once, in the API reference; here without an index entry
        page += (f".. autofunction:: {check.__module__}.{check.__name__}\n"
                 f"   :no-index:\n\n")
        verdict = "holds" if result.passed else "FAILS"
        page += (f"Left side {result.lhs:.6g}, right side {result.rhs:.6g}, difference "
                 f"{result.difference:.3g}; test: ``{result.criterion}``; the identity "
                 f"**{verdict}**.\n\n")
        if result.summary:
            page += literal("\n".join(result.summary))
        for picture in pictures.get(result.number, []):
            page += f".. image:: {picture}\n   :width: 90%\n\n"
    return page


def _theory_pictures(results, plots_dir: Path | None) -> dict[int, list[str]]:
    """identity number -> picture paths (the pictures ``minivae verify --plots`` draws)."""
    from minivae.theory.plots import write_plots

    written = write_plots(results, plots_dir) if plots_dir is not None else None
    if not written:  # no matplotlib: the page has the numbers without pictures
        return {}
    out: dict[int, list[str]] = {}
    for path in written:
        number = int(re.match(r"identity(\d+)_", path.name).group(1))
        out.setdefault(number, []).append(os.path.relpath(path, plots_dir.parent))
    return out


def training_page() -> str:
    from minivae.tool import cli

    page = docstring_page(*DOCSTRING_PAGES["training"])
    page += "\n" + heading("Every command's ``--help``", "-")
    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in actions[0].choices.items():
        page += heading(f"``minivae {name}``", "~") + literal(sub.format_help())
    return page


def results_page() -> str:
    page = heading("Results")
    page += ("Each report below is what the command on its first line printed, with the "
             "machine and date it ran on. Rerun the command to reproduce it.\n\n")
    reports = sorted((ROOT / "scripts" / "results").glob("*.txt"))
    if not reports:
        page += "(No reports yet: ``scripts/results/`` is empty.)\n"
    for path in reports:
        page += heading(path.stem, "-") + literal(path.read_text())
    return page


def api_page() -> str:
    page = heading("API reference")
    for module in API_MODULES:
        page += heading(f"``{module}``", "-")
        page += f".. automodule:: {module}\n   :members:\n   :show-inheritance:\n\n"
    return page


def write_sources(src: Path, plots: bool) -> None:
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    pages = {"conf.py": CONF.format(page_of_module=PAGE_OF_MODULE), "index.md": index_page()}
    for page, (title, module) in DOCSTRING_PAGES.items():
        pages[f"{page}.rst"] = (training_page() if page == "training"
                                else docstring_page(title, module))
    pages["theory.rst"] = theory_page(src / "plots" if plots else None)
    pages["results.rst"] = results_page()
    pages["api.rst"] = api_page()
    for name, text in pages.items():
        (src / name).write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "docs"),
                   help="where the HTML goes (default: build/docs)")
    p.add_argument("--keep-warnings", action="store_true",
                   help="report Sphinx warnings without failing (default: warnings are errors)")
    p.add_argument("--no-plots", action="store_true",
                   help="skip the theory pictures (default: drawn when matplotlib is installed)")
    args = p.parse_args(argv)
    try:
        import furo  # noqa: F401
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as exc:
        print(f"error: building the docs needs the docs extra: pip install -e '.[docs]' "
              f"({exc})", file=sys.stderr)
        return 2
    src = ROOT / "build" / "docs-src"
    with contextlib.redirect_stdout(io.StringIO()):
        write_sources(src, plots=not args.no_plots)
    warnings_are_errors = [] if args.keep_warnings else ["-W", "--keep-going"]
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", *warnings_are_errors,
               str(src), args.out]
    status = subprocess.run(command, cwd=ROOT).returncode
    if status == 0:
        print(f"built {Path(args.out) / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
