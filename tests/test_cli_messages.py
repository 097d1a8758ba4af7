"""Every user error of the command line: one line naming the option or file, nothing left behind.

Run in-process through ``cli.main`` (fast enough to try every kind); the same kinds, one
of each category, run as real processes in ``tests/test_faults.py``. Also here: the
pieces the commands stand on (run-directory ownership, files written whole, the
streamed sample grid, the memory estimate, the progress display of ``evaluate``).
"""

import io
import json
import shutil
import threading
import tracemalloc

import numpy as np
import pytest

from minivae import VAE, Adam
from minivae.tool import cli, figures
from minivae.tool.evaluate import evaluate_run
from minivae.tool.files import atomic_open, atomic_write, original_name
from minivae.tool.memory import step_bytes
from minivae.tool.rundir import RunDirError, claim_next_run_dir, new_run
from minivae.tool.train import TrainConfig, make_objective, train, train_step

TINY = ["--dataset", "synthetic", "--hidden", "12", "--latent-dim", "2", "--batch-size", "500",
        "--train-eval-size", "100", "--no-pictures"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run, a run with NaN parameters, and a few bad files, in one directory."""
    root = tmp_path_factory.mktemp("world")
    train(TrainConfig(dataset="synthetic", hidden=[12], latent_dim=2, batch_size=500,
                      train_eval_size=100, epochs=1, pictures=False), root / "run")
    shutil.copytree(root / "run", root / "nanrun")
    for name in ("latest.npz", "best.npz"):
        path = root / "nanrun" / "checkpoints" / name
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["params"] = arrays["params"].copy()
        arrays["params"][3] = np.nan
        np.savez(path, **arrays)
    shutil.copytree(root / "run", root / "wide")  # finite parameters, sigma = e^5000
    for name in ("latest.npz", "best.npz"):
        path = root / "wide" / "checkpoints" / name
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        model = VAE.from_config(json.loads(arrays["meta_json"].tobytes())["model_config"])
        model.set_flat(arrays["params"])
        model.params["encoder.1.b"][2:] = 1e4  # the log-variance head
        arrays["params"] = model.get_flat()
        np.savez(path, **arrays)
    shutil.copytree(root / "run", root / "badbest")
    (root / "badbest" / "checkpoints" / "best.npz").write_bytes(b"PK\x03\x04 torn")
    (root / "afile").write_text("x")
    (root / "half" / "checkpoints").mkdir(parents=True)
    shutil.copy(root / "run" / "checkpoints" / "best.npz", root / "half" / "checkpoints")
    shutil.copy(root / "run" / "metrics.jsonl", root / "half")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "binarized_mnist.npz").write_bytes(b"\x80\x04garbage, not a zip")
    (root / "objects").mkdir()
    np.savez(root / "objects" / "binarized_mnist.npz", train=np.array([1, "a"], dtype=object),
             valid=np.zeros((2, 784), np.uint8), test=np.zeros((2, 784), np.uint8))
    (root / "empty").mkdir()
    np.savez(root / "empty" / "binarized_mnist.npz", train=np.zeros((5, 784), np.uint8),
             valid=np.zeros((0, 784), np.uint8), test=np.zeros((2, 784), np.uint8))
    for name, n in (("idx0", 0), ("idx1", 1)):
        (root / name).mkdir()
        for stem, count in (("train", n), ("t10k", 2)):
            header = bytes([0, 0, 8, 3]) + np.array([count, 28, 28], dtype=">u4").tobytes()
            (root / name / f"{stem}-images-idx3-ubyte").write_bytes(
                header + bytes(count * 784))
    return root


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _main(args, monkeypatch, capsys, cwd):
    monkeypatch.chdir(cwd)
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# (arguments, what the one line must contain); paths are relative to the world directory
CASES = {
    # run directories
    "resume and run-dir": (["train", "--resume", "run", "--run-dir", "other"],
                           "--run-dir cannot be given with it"),
    "resume empty": (["train", "--resume", ""], "argument --resume: expected a path"),
    "run-dir empty": (["train", *TINY, "--run-dir", ""], "argument --run-dir: expected a path"),
    "resume missing": (["train", "--resume", "nowhere"], "--resume nowhere: no such directory"),
    "resume not a run": (["train", "--resume", "half"], "no run to resume there"),
    "resume a file": (["train", "--resume", "afile"], "--resume afile: no such directory"),
    "resume no-pictures": (["train", "--resume", "run", "--no-pictures"],
                           "--no-pictures cannot be changed"),
    "resume lr": (["train", "--resume", "run", "--lr", "0.1"], "--lr cannot be changed"),
    "run-dir a file": (["train", *TINY, "--run-dir", "afile"],
                       "--run-dir afile exists and is not a directory"),
    "run-dir under a file": (["train", *TINY, "--run-dir", "afile/sub"],
                             "afile is a file, not a directory"),
    "run-dir not empty": (["train", *TINY, "--run-dir", "half"], "is not empty (checkpoints, "),
    "run-dir holds a run": (["train", *TINY, "--run-dir", "run"], "continue it with --resume"),
    # checkpoints
    "evaluate NaN": (["evaluate", "nanrun", "--k", "5"], "holds non-finite parameters"),
    "sample NaN": (["sample", "nanrun", "--out", "nan.png"], "holds non-finite parameters"),
    "resume NaN": (["train", "--resume", "nanrun", "--epochs", "2"],
                   "holds non-finite parameters"),
    "evaluate overflows": (["evaluate", "wide", "--k", "5"],
                           "the model's negative ELBO on the test split is nan (not finite)"),
    "best corrupt": (["evaluate", "badbest", "--k", "5"],
                     "it was left untouched (the run's other checkpoint: --checkpoint latest)"),
    "checkpoint of a file": (["evaluate", "run/checkpoints/best.npz", "--checkpoint", "latest"],
                             "drop --checkpoint"),
    "evaluate not a run": (["evaluate", "afile"], "no checkpoint in afile/checkpoints"),
    # memory and sizes
    "iwae k huge": (["train", *TINY, "--objective", "iwae", "--k", "20000000", "--run-dir",
                     "big"], "would need about"),
    "model huge": (["train", *TINY, "--latent-dim", "10000000000", "--run-dir", "big"],
                   "a model with 380,000,001,624 parameters"),
    "evaluate batch 0": (["evaluate", "run", "--batch-size", "0"],
                         "argument --batch-size: expected an integer >= 1, got '0'"),
    "evaluate batch -5": (["evaluate", "run", "--batch-size", "-5"],
                          "argument --batch-size: expected an integer >= 1"),
    "evaluate n 0": (["evaluate", "run", "--n", "0"], "argument --n: expected an integer >= 1"),
    "evaluate k -1": (["evaluate", "run", "--k", "-1"], "argument --k: expected an integer >= 0"),
    "sample n 0": (["sample", "run", "--n", "0"], "argument --n: expected an integer >= 1"),
    "sample n huge": (["sample", "run", "--n", "10000000000", "--out", "huge.png"],
                      "choose a smaller --n"),
    "train k 0": (["train", *TINY, "--k", "0"], "argument --k: expected an integer >= 1"),
    "train latent 0": (["train", *TINY, "--latent-dim", "0"], "argument --latent-dim"),
    "train hidden -3": (["train", *TINY, "--hidden", "-3"], "argument --hidden"),
    "train epochs -1": (["train", *TINY, "--epochs", "-1"], "argument --epochs"),
    "train eval size 0": (["train", *TINY, "--train-eval-size", "0"],
                          "argument --train-eval-size"),
    "train patience 0": (["train", *TINY, "--patience", "0"], "argument --patience"),
    "empty split": (["train", "--dataset", "binarized-mnist", "--data-dir", "empty",
                     "--run-dir", "x"], "split 'valid' must have shape (N, 784) with N >= 1"),
    "IDX 0 images": (["train", "--dataset", "mnist", "--data-dir", "idx0", "--run-dir", "x"],
                     "the IDX file holds no data"),
    "IDX 1 image": (["train", "--dataset", "mnist", "--data-dir", "idx1", "--run-dir", "x"],
                    "1 training image(s); at least 2"),
    # messages
    "k not a number": (["train", "--k", "x"], "argument --k: expected an integer >= 1, got 'x'"),
    "lr nan": (["train", *TINY, "--lr", "nan"], "argument --lr: expected a finite number > 0"),
    "lr 0": (["train", *TINY, "--lr", "0"], "argument --lr: expected a finite number > 0"),
    "beta inf": (["train", *TINY, "--beta", "inf"], "argument --beta: expected a finite"),
    "warmup nan": (["train", *TINY, "--warmup-epochs", "nan"], "argument --warmup-epochs"),
    "seed -1": (["train", *TINY, "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    "unknown choice": (["train", "--likelihood", "poisson"], "argument --likelihood: invalid"),
    "iwae with kl": (["train", *TINY, "--objective", "iwae", "--kl", "mc", "--run-dir", "x"],
                     "--kl applies to the ELBO objective only"),
    "iwae with beta": (["train", *TINY, "--objective", "iwae", "--beta", "0.5", "--run-dir",
                        "x"], "beta and KL warm-up apply to the ELBO objective only"),
    "data-dir unused": (["train", *TINY, "--data-dir", "corrupt", "--run-dir", "x"],
                        "--data-dir applies to the datasets read from files"),
    "data-dir missing": (["train", "--dataset", "binarized-mnist", "--data-dir", "nowhere",
                          "--run-dir", "x"], "--data-dir nowhere: no such directory"),
    "mnist without data-dir": (["train", "--dataset", "mnist", "--run-dir", "x"],
                               "pass --data-dir DIR"),
    "corrupt npz": (["train", "--dataset", "binarized-mnist", "--data-dir", "corrupt",
                     "--run-dir", "x"], "corrupt/binarized_mnist.npz is not a .npz file"),
    "object npz": (["train", "--dataset", "binarized-mnist", "--data-dir", "objects",
                    "--run-dir", "x"], "array 'train' holds Python objects"),
    "evaluate data-dir unused": (["evaluate", "run", "--data-dir", "corrupt"],
                                 "--data-dir applies to runs on data read from files"),
    "evaluate split": (["evaluate", "run", "--split", "all"], "argument --split: invalid"),
    "sample jpg": (["sample", "run", "--out", "x.jpg"], "--out must name a .png file"),
    "sample out dir missing": (["sample", "run", "--out", "nowhere/x.png"],
                               "the directory nowhere does not exist"),
    "sample out a directory": (["sample", "run", "--out", "dir.png"], "is a directory"),
    "gradcheck directions 0": (["gradcheck", "--directions", "0"],
                               "argument --directions: expected an integer >= 1"),
    "gradcheck tol nan": (["gradcheck", "--tol", "nan"], "argument --tol: expected a finite"),
    "gradcheck tol -1": (["gradcheck", "--tol", "-1"], "argument --tol: expected a finite"),
    "gradcheck batch 0": (["gradcheck", "--batch", "0"], "argument --batch"),
    "gradcheck input 0": (["gradcheck", "--input-dim", "0"], "argument --input-dim"),
    "gradcheck iwae kl": (["gradcheck", "--objective", "iwae", "--kl", "mc", "--beta", "0.5"],
                          "--kl, --beta apply to the ELBO objective only"),
    "gradcheck seed -1": (["gradcheck", "--seed", "-1"], "argument --seed"),
    "verify seed -1": (["verify", "--seed", "-1"], "minivae verify: error: argument --seed"),
    "verify only 99": (["verify", "--only", "99"], "argument --only: invalid choice"),
    "no command": ([], "the following arguments are required: COMMAND"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_and_leaves_nothing(world, case, monkeypatch, capsys):
    args, expected = CASES[case]
    (world / "dir.png").mkdir(exist_ok=True)
    before = _listing(world)
    code, out, err = _main(args, monkeypatch, capsys, world)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err and "allow_pickle" not in err
    assert lines[0].startswith(("error: ", "minivae"))
    assert _listing(world) == before  # nothing created, nothing removed


def test_evaluate_of_one_datapoint_writes_strict_json(world, monkeypatch, capsys):
    code, out, _ = _main(["evaluate", "run", "--n", "1", "--k", "3"], monkeypatch, capsys, world)
    assert code == 0 and "no standard error from 1 datapoint" in out
    text = (world / "run" / "evaluation_test.json").read_text()
    ev = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert ev["neg_elbo_stderr"] is None and ev["log_marginal_data_stderr"] is None
    (world / "run" / "evaluation_test.json").unlink()


def test_evaluate_shows_progress_like_train(world):
    err = io.StringIO()
    evaluate_run(world / "run", k=50, n=30, batch_size=10, print_fn=lambda *a: None, err=err,
                 progress_interval=0)
    lines = err.getvalue().splitlines()
    assert len(lines) == 3 and "log p(x), k=50 [" in lines[0] and "3/3" in lines[-1]
    assert "datapoints/s" in lines[0] and "ETA" in lines[0]
    (world / "run" / "evaluation_test.json").unlink()


# ------------------------------------------------------------------ run directories


def test_a_run_directory_has_one_owner_at_a_time(tmp_path):
    owner = new_run(tmp_path / "r")
    with pytest.raises(RunDirError, match=r"is in use: another minivae process \(pid \d+\)"):
        new_run(tmp_path / "r")  # a second open file description: flock refuses it
    owner.release()
    again = new_run(tmp_path / "r")  # free once released; holds only the lock file
    again.release()
    owner.discard()  # the directory its owner created goes
    assert not (tmp_path / "r").exists()


def test_next_run_dir_is_claimed_race_free(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    claimed, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        claimed.append(claim_next_run_dir()[0])

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in claimed) == [f"run-{i}" for i in range(1, 9)]


def test_a_new_run_that_fails_before_its_first_step_leaves_nothing(tmp_path):
    (tmp_path / "keep").mkdir()  # an empty directory given by the user stays, empty
    for run_dir in (tmp_path / "new" / "deeper", tmp_path / "keep"):
        with pytest.raises(FileNotFoundError, match="--data-dir"):
            train(TrainConfig(dataset="mnist", data_dir=str(tmp_path / "absent")), run_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert list((tmp_path / "keep").iterdir()) == []


# ------------------------------------------------------------------ files written whole


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "f.bin", b"old")
    with pytest.raises(OSError, match="disk full"), atomic_open(path) as f:
        f.write(b"half of the new")
        raise OSError(28, "disk full")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    assert original_name(tmp_path / ".latest.npz.tmp123") == tmp_path / "latest.npz"
    assert original_name(tmp_path / ".curves.png.tmp9.png") == tmp_path / "curves.png"


@pytest.mark.parametrize("n", [1, 7, 64])
def test_the_streamed_sample_grid_equals_the_whole_picture(tmp_path, n):
    model = VAE(64, 2, hidden=(8,), dtype=np.float32, seed=4)
    title = f"{n} samples, a title long enough to be wrapped onto two lines in a narrow picture"
    streamed = figures.save_sample_grid(
        tmp_path / "s.png", n, (lambda rng: lambda c: model.sample(rng, c))(
            np.random.default_rng(5)), (8, 8), title)
    whole = figures.save_samples(tmp_path / "w.png", model.sample(np.random.default_rng(5), n),
                                 (8, 8), title)
    np.testing.assert_array_equal(figures.decode_png(streamed.read_bytes()),
                                  figures.decode_png(whole.read_bytes()))


def test_a_sample_grid_with_non_finite_values_is_not_written(tmp_path):
    rows = iter([np.full((3, 64), 0.5), np.full((3, 64), np.nan)])
    with pytest.raises(ValueError, match="non-finite values"):
        figures.save_sample_grid(tmp_path / "s.png", 9, lambda c: next(rows)[:c], (8, 8), "t")
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_would_fill_the_disk_is_refused_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage",  # 1 kB free
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(RunDirError, match=r"has 1.0 kB free; the run's checkpoints need about"):
        train(TrainConfig(dataset="synthetic", hidden=[12], latent_dim=2), tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the memory estimate


@pytest.mark.parametrize("objective, k", [("elbo", 20), ("iwae", 40)])
def test_the_step_memory_estimate_bounds_the_measured_peak(objective, k):
    """tracemalloc's peak of one step lies between half the estimate and the estimate: the
    refusal is neither blind to a step that cannot fit nor far too cautious."""
    rng = np.random.default_rng(0)
    model = VAE(64, 4, hidden=(32,), dtype=np.float32, seed=0)
    opt, loss_and_grad = Adam(1e-3), make_objective(model, objective)
    x = (rng.random((50, 64)) < 0.3).astype(np.float32)
    eps = model.sample_eps(rng, 50, k)
    train_step(model, opt, loss_and_grad, x, eps)
    tracemalloc.start()
    train_step(model, opt, loss_and_grad, x, eps)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = step_bytes(k, 50, 64, 4, (32,), None, "bernoulli", np.float32)
    assert estimate / 2 <= peak <= estimate, (peak, estimate)
