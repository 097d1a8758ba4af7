"""Examples that cannot go stale: every deterministic example in the README and the docstrings runs.

* README: a ```` ```python ```` block followed by the word ``prints`` and a fenced block
  is executed and its standard output compared with that block, line by line; a
  ```` ```console ```` block is a list of ``$ command`` lines, each followed by the
  output it prints, and each command is run and compared. (Commands that need data
  or take minutes go in ```` ```bash ```` blocks, which are not executed.)
* Docstrings: every ``>>>`` example in the package runs under :mod:`doctest`.
* Results: a fenced README block right after ``<!-- from scripts/results/NAME.txt -->``
  quotes a report written by ``scripts/record.py``: every line of it must appear in that
  report, so a number in the README is the output of a command, never typed by hand.
* Every test a docstring names (``tests/test_x.py`` and ``test_name``) exists, so the
  reading order's "proved by" links stay true.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PACKAGE = ROOT / "minivae"

PYTHON_EXAMPLE = re.compile(
    r"```python\n(?P<code>.*?)```\s*\nprints\s*\n+```[a-z]*\n(?P<out>.*?)```", re.S)
CONSOLE_BLOCK = re.compile(r"```console\n(?P<body>.*?)```", re.S)
QUOTED_REPORT = re.compile(r"<!-- from (?P<report>scripts/results/[\w.-]+\.txt) -->\s*\n"
                           r"```[a-z]*\n(?P<body>.*?)```", re.S)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def python_examples() -> list[tuple[str, str]]:
    return [(m["code"], m["out"]) for m in PYTHON_EXAMPLE.finditer(README)]


def console_examples() -> list[tuple[str, str]]:
    """(command, expected output) for every ``$ command`` in a console block."""
    out = []
    for block in CONSOLE_BLOCK.finditer(README):
        parts = re.split(r"^\$ (.+)$", block["body"], flags=re.M)
        out += [(cmd, expected) for cmd, expected in zip(parts[1::2], parts[2::2], strict=True)]
    return out


def test_the_readme_has_executed_examples():
    # the library's example, check_grads on your own function, and `verify`; and the numbers
    # it quotes (quickstart, MNIST, speed, gaps) come from reports
    assert len(python_examples()) >= 2
    assert len(console_examples()) >= 1
    assert len(QUOTED_REPORT.findall(README)) >= 4


@pytest.mark.parametrize("code, expected", python_examples(),
                         ids=[f"python-{i}" for i in range(len(python_examples()))])
def test_readme_python_example_prints_what_it_says(code, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md example", "exec"), {"__name__": "__readme__"})
    assert _lines(buf.getvalue()) == _lines(expected)


@pytest.mark.parametrize("command, expected", console_examples(),
                         ids=[f"console-{i}" for i in range(len(console_examples()))])
def test_readme_console_example_prints_what_it_says(command, expected, tmp_path):
    argv = shlex.split(command)
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif argv[0] == "minivae":
        argv[:1] = [sys.executable, "-m", "minivae"]
    env = dict(os.environ, COLUMNS="100")
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout) == _lines(expected)


@pytest.mark.parametrize("report, body", [(m["report"], m["body"])
                                          for m in QUOTED_REPORT.finditer(README)])
def test_readme_numbers_are_quoted_from_reports(report, body):
    lines = set((ROOT / report).read_text().splitlines())
    missing = [line for line in body.splitlines() if line.strip() and line not in lines]
    assert not missing, f"not in {report} (rerun the command in its first line): {missing}"


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(mod, module):
        result = runner.run(test, out=lambda _: None)
        assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} failed"


def test_every_test_a_docstring_names_exists():
    test_files = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}
    all_tests = "\n".join(test_files.values())
    cited_files, cited_tests = set(), set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        cited_files |= set(re.findall(r"tests/(test_\w+\.py)", text))
        cited_tests |= set(re.findall(r"``(?:tests/test_\w+\.py::)?(test_\w+)``", text))
    assert cited_files, "the reading order should cite its tests"
    assert not cited_files - set(test_files), f"missing test files: {cited_files - set(test_files)}"
    missing = {t for t in cited_tests if f"def {t}(" not in all_tests}
    assert not missing, f"docstrings cite tests that do not exist: {sorted(missing)}"
