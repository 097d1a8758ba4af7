"""End to end on tiny data: train, resume (bit for bit), evaluate, sample, failures, --help."""

import json
import os
import signal
import struct
import zlib

import numpy as np
import pytest

from minivae.tool import cli, figures
from minivae.tool.checkpoint import load_checkpoint
from minivae.tool.train import EXIT_INTERRUPTED, EXIT_NONFINITE, TrainConfig, train

TINY = ["--dataset", "synthetic", "--hidden", "12", "--latent-dim", "2", "--batch-size",
        "200", "--train-eval-size", "200", "--seed", "3"]


def _cfg(**kw):
    base = dict(dataset="synthetic", hidden=[12], latent_dim=2, batch_size=200,
                train_eval_size=200, seed=3, epochs=2)
    base.update(kw)
    return TrainConfig(**base)


def _params(run_dir, which="latest"):
    return load_checkpoint(run_dir / "checkpoints" / f"{which}.npz").params


def test_train_resume_evaluate_sample_end_to_end(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train", *TINY, "--epochs", "2", "--run-dir", str(a)]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "nats" in out and "active units" in out
    assert cli.main(["train", "--resume", str(a), "--epochs", "3"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert cli.main(["train", *TINY, "--epochs", "3", "--run-dir", str(b)]) == 0
    # stopped after epoch 2 and resumed == never stopped, bit for bit
    np.testing.assert_array_equal(_params(a), _params(b))
    ca, cb = (load_checkpoint(d / "checkpoints" / "latest.npz") for d in (a, b))
    for k in cb.optimizer_state:
        np.testing.assert_array_equal(ca.optimizer_state[k], cb.optimizer_state[k])
    assert ca.rngs["train"].bit_generator.state == cb.rngs["train"].bit_generator.state
    ma = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert [m["valid_loss"] for m in ma] == [m["valid_loss"] for m in mb]
    assert len(ma) == 3 and ma[-1]["epoch"] == 3

    # the run directory
    assert json.loads((a / "config.json").read_text())["dataset"] == "synthetic"
    names = {p.name for p in (a / "pictures").iterdir()}
    assert {"reconstructions_epoch003.png", "samples_epoch003.png",
            "manifold_epoch003.png"} <= names
    for ck in (a / "checkpoints").glob("*.npz"):  # no pickle anywhere
        with np.load(ck, allow_pickle=False) as f:
            assert all(f[k].dtype != object for k in f.files)

    assert cli.main(["evaluate", str(a), "--k", "20", "--n", "40"]) == 0
    out = capsys.readouterr().out
    assert "negative ELBO" in out and "k=20" in out
    ev = json.loads((a / "evaluation_test.json").read_text())
    assert ev["n"] == 40 and ev["k"] == 20
    # L_20 >= ELBO on average; both are estimates, so allow their standard errors
    assert ev["log_marginal"] >= -ev["neg_elbo"] - 3 * ev["neg_elbo_stderr"]

    png = tmp_path / "s.png"
    assert cli.main(["sample", str(a), "--n", "9", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_interrupt_mid_epoch_then_resume_is_bit_exact(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"

    def ctrl_c(step):
        if step == 13:  # mid-epoch 2 (10 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    r = train(_cfg(epochs=3, pictures=False), a, _step_hook=ctrl_c)
    assert r.status == "interrupted" and r.exit_code == EXIT_INTERRUPTED and r.step == 13
    assert load_checkpoint(a / "checkpoints" / "latest.npz").meta["position"]["batch"] == 3
    r = train(run_dir=a, resume=True)
    assert r.status == "completed" and r.step == 30
    train(_cfg(epochs=3, pictures=False), b)
    np.testing.assert_array_equal(_params(a), _params(b))
    np.testing.assert_array_equal(_params(a, "best"), _params(b, "best"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_non_finite_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    code = cli.main(["train", *TINY, "--epochs", "2", "--lr", "1e30", "--run-dir", str(run),
                     "--no-pictures"])
    assert code == EXIT_NONFINITE
    err = capsys.readouterr().err
    assert "non-finite" in err and "step" in err and "latest.npz" in err
    ck = load_checkpoint(run / "checkpoints" / "latest.npz")
    assert np.isfinite(ck.params).all() and ck.meta["epoch"] == 0


def test_existing_run_is_never_overwritten_and_resume_options_are_fixed(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--run-dir", str(run),
                     "--no-pictures"]) == 0
    before = (run / "checkpoints" / "latest.npz").read_bytes()
    assert cli.main(["train", *TINY, "--epochs", "1", "--run-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert "--lr cannot be changed" in capsys.readouterr().err
    # a corrupt checkpoint: clear error, file untouched
    (run / "checkpoints" / "latest.npz").write_bytes(before[:100])
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert (run / "checkpoints" / "latest.npz").read_bytes() == before[:100]


def test_bernoulli_on_grey_levels_is_refused(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "linear-gaussian", "--likelihood", "bernoulli",
                     "--binarize", "none", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "0/1" in err and "binarize" in err and "gaussian" in err


def test_linear_gaussian_reports_the_exact_log_marginal(tmp_path, capsys):
    run = tmp_path / "lg"
    assert cli.main(["train", "--dataset", "linear-gaussian", "--likelihood", "gaussian-shared",
                     "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--batch-size",
                     "500", "--dtype", "float64", "--run-dir", str(run)]) == 0
    assert "exact -log p(x)" in capsys.readouterr().out
    assert cli.main(["evaluate", str(run), "--k", "10", "--n", "20"]) == 0
    ev = json.loads((run / "evaluation_test.json").read_text())
    assert ev["exact_log_marginal"] is not None and ev["n"] == 20


def test_early_stopping_and_warmup(tmp_path, capsys):
    r = train(_cfg(epochs=30, patience=1, warmup_epochs=2.0, lr=3e-2, pictures=False),
              tmp_path / "r")
    assert r.status == "early-stopped" and r.epoch < 30
    assert r.history[0]["beta"] < 1.0 and "early stopping" in capsys.readouterr().out


def test_gradcheck_command(capsys):
    assert cli.main(["gradcheck", "--likelihood", "gaussian-hetero", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "decoder.0.W" in out and "passed" in out
    assert cli.main(["gradcheck", "--tol", "0"]) == 1


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "gradcheck"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "default" in out
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help and ("default" in action.help or action.dest in
                                    ("resume", "run_dir")), action.dest


def test_png_writer_round_trip(tmp_path):
    img = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 8
    raw = figures.write_png(tmp_path / "x.png", img).read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", raw[16:24])
    assert (w, h) == (5, 6)
    idat_len = struct.unpack(">I", raw[33:37])[0]
    rows = np.frombuffer(zlib.decompress(raw[41:41 + idat_len]), np.uint8).reshape(6, 6)
    assert (rows[:, 0] == 2).all()  # filter type 2, "Up": each row minus the row above
    np.testing.assert_array_equal(rows[:, 1:], np.diff(img, axis=0, prepend=0))
    np.testing.assert_array_equal(figures.decode_png(raw), img)
    grid = figures.image_grid(np.ones((3, 4)), (2, 2), ncols=2, pad=1)
    assert grid.shape == (7, 7) and grid[1, 1] == 255 and grid[0, 0] == 128


def test_mnist_idx_with_dynamic_binarization_resumes_bit_exactly(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, n in (("train-images-idx3-ubyte", 60), ("t10k-images-idx3-ubyte", 12)):
        a = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        header = bytes([0, 0, 8, 3]) + np.array(a.shape, dtype=">u4").tobytes()
        (tmp_path / name).write_bytes(header + a.tobytes())
    opts = ["--dataset", "mnist", "--data-dir", str(tmp_path), "--hidden", "8",
            "--latent-dim", "2", "--batch-size", "20", "--no-pictures"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train", *opts, "--epochs", "1", "--run-dir", str(a)]) == 0
    assert "binarization: dynamic" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(a), "--epochs", "2"]) == 0
    assert cli.main(["train", *opts, "--epochs", "2", "--run-dir", str(b)]) == 0
    np.testing.assert_array_equal(_params(a), _params(b))


def test_iwae_objective_with_k_samples(tmp_path, capsys):
    r = train(_cfg(epochs=1, objective="iwae", k=3, pictures=False), tmp_path / "r")
    assert r.status == "completed" and np.isfinite(r.history[0]["train_objective"])
    with pytest.raises(ValueError, match="IWAE"):
        train(_cfg(objective="iwae", beta=0.5), tmp_path / "s")


def test_ctrl_c_in_a_real_process_saves_and_exits_cleanly(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "minivae", "train", *TINY, "--epochs", "100000", "--no-pictures",
         "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "checkpoint saved" in out and "Traceback" not in err
    assert load_checkpoint(run / "checkpoints" / "latest.npz").meta["step"] > 0


def test_default_run_dirs_are_numbered_so_the_command_can_be_repeated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli.main(["train", *TINY, "--epochs", "1", "--no-pictures"]) == 0
    assert (tmp_path / "runs" / "run-1" / "checkpoints" / "latest.npz").exists()
    assert (tmp_path / "runs" / "run-2" / "checkpoints" / "latest.npz").exists()


def test_quickstart_default_trains_on_digits_and_the_loss_falls(tmp_path, monkeypatch, capsys):
    """The README's main job, shortened: `python -m minivae train` with its defaults."""
    pytest.importorskip("sklearn")  # the `digits` extra; part of the `test` extra too
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--epochs", "3"]) == 0
    run = tmp_path / "runs" / "run-1"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]
    assert (run / "pictures" / "samples_epoch003.png").exists()
    assert "nats" in capsys.readouterr().out
