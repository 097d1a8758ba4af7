"""``python -m minivae verify`` and the two scripts of the exact-models issue, end to end."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae.theory.exact import LinearGaussian
from minivae.tool.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_verify_prints_the_table_and_exits_zero(capsys):
    assert main(["verify", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "18/18 identities hold" in out
    for header in ("identity", "left side", "right side", "difference", "result"):
        assert header in out
    assert out.count("PASS") == 18 and "FAIL" not in out
    assert "from: " in out and "nats" in out
    assert "naive bias" in out  # the bias/std table of identity 6


def test_verify_json_parses_and_is_reproducible(capsys):
    assert main(["verify", "--json", "--only", "3", "6", "12"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["n_passed"] == doc["n_total"] == 3
    assert [r["number"] for r in doc["identities"]] == [3, 6, 12]
    assert doc["identities"][1]["details"]["table"][0]["M"] == 1
    assert main(["verify", "--json", "--only", "3", "6", "12"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["lhs"] for r in again["identities"]] == [r["lhs"] for r in doc["identities"]]


def test_verify_exit_status_is_nonzero_when_an_identity_fails(monkeypatch, capsys):
    # Plant a bug (the KL's sign flipped in the ELBO) and check that verify says so.
    original = LinearGaussian.elbo

    def flipped(self, x, q_mean, q_cov):
        return 2 * self.expected_log_lik(x, q_mean, q_cov) - original(self, x, q_mean, q_cov)

    monkeypatch.setattr(LinearGaussian, "elbo", flipped)
    assert main(["verify", "--only", "2", "3"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_verify_rejects_unknown_identity_and_documents_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--only", "19"])
    assert exc.value.code == 2
    capsys.readouterr()
    sub = build_parser()._subparsers._group_actions[0].choices["verify"]
    text = sub.format_help()
    for option in ("--seed", "--json", "--only", "--no-details", "--plots", "(default: 0)"):
        assert option in text


def test_python_dash_m_and_script_agree():
    # The README's command and the script: same JSON numbers, exit status 0.
    args = ["--json", "--only", "5", "9"]
    a = subprocess.run([sys.executable, "-m", "minivae", "verify", *args], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    b = subprocess.run([sys.executable, str(ROOT / "scripts" / "verify_derivations.py"), *args],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert [r["lhs"] for r in ja["identities"]] == [r["lhs"] for r in jb["identities"]]


# --------------------------------------------------------------------------
# scripts/ppca_recovery.py: the closed form, and a short run of the script
# --------------------------------------------------------------------------


def _load_ppca_script():
    spec = importlib.util.spec_from_file_location("ppca_recovery",
                                                  ROOT / "scripts" / "ppca_recovery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ppca_closed_form_is_the_maximum_likelihood():
    ppca = _load_ppca_script()
    rng = np.random.default_rng(0)
    x = ppca.make_ppca_data(rng, 2000, 6, 2, 0.5)
    ref = ppca.ppca_ml(x, 2)
    model = LinearGaussian(ref["W"], ref["b"], np.full(6, ref["sigma2"]))
    # its log-likelihood formula agrees with the exact model's ...
    np.testing.assert_allclose(np.mean(model.log_marginal(x)), ref["loglik"], rtol=1e-10)
    # ... and it is a maximum: the exact gradient vanishes (isotropic noise: the sum of
    # the per-dimension noise gradients) and random perturbations only lower it.
    grad = model.log_marginal_grad(x)
    assert np.max(np.abs(grad["A"])) < 1e-10 and np.max(np.abs(grad["b"])) < 1e-10
    assert abs(np.sum(grad["noise"])) < 1e-10
    for _ in range(5):
        W = ref["W"] + 0.01 * rng.standard_normal(ref["W"].shape)
        worse = LinearGaussian(W, ref["b"], np.full(6, ref["sigma2"] * 1.01))
        assert np.mean(worse.log_marginal(x)) < ref["loglik"]


def test_ppca_script_json_short_run():
    # A short run (small N, few steps): checks the plumbing and the invariant that the
    # exact ELBO stays below the exact log-likelihood, not the 0.01-nat target.
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ppca_recovery.py"), "--json", "--n", "500",
         "--steps", "300"], cwd=ROOT, capture_output=True, text=True)
    doc = json.loads(out.stdout)
    assert out.returncode == (0 if doc["target_met"] else 1)
    assert [m["likelihood"] for m in doc["models"]] == ["gaussian-isotropic", "gaussian-fixed",
                                                         "gaussian-shared"]
    for m in doc["models"]:
        assert m["exact_elbo"] < m["exact_loglik"]
        assert np.isfinite(m["gap_ppca_minus_trained"])


def test_brief_prints_one_line_per_identity(capsys):
    assert main(["verify", "--brief", "--only", "2", "13"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["2", "PASS"], ["13", "PASS"]]
