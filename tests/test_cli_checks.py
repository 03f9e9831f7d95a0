"""The ``skdvl`` command never writes a silently wrong value (issue 10).

Targets (``--task``), Ctrl-C, output paths, feature scaling and ``--drop``, and the
domain of every numeric option, end to end through ``python -m skdvl``.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from skdvl import KNNShapley
from skdvl.cli import _demo_png, main

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import assert_one_line, run  # noqa: E402


def files_in(directory):
    return sorted(os.listdir(directory))


def write(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def score_csv(tmp_path):
    """60 rows, an integer 0-29 score as target: a quantity that looks like labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.clip(np.round(15 + 5 * X[:, 0] + rng.normal(size=60)), 0, 29).astype(int)
    assert np.unique(y).size > 20
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(score=y)
    return write(tmp_path, "data.csv", frame), frame


@pytest.fixture
def label_csv(tmp_path):
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y)
    return write(tmp_path, "data.csv", frame), frame


# ----------------------------------------------------------------------------- --task
def test_integer_target_with_many_values_warns_naming_task(score_csv, tmp_path):
    path, _ = score_csv
    proc = run("value", path, "--target", "score", "--out", tmp_path / "v.csv", "-q")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("skdvl: warning: target column 'score' holds")
    assert "distinct integer values, so --task auto treats it as classification" in lines[0]
    assert "pass --task regression" in lines[0]


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_task_chooses_the_game_and_silences_the_warning(task, score_csv, tmp_path):
    path, frame = score_csv
    out = tmp_path / "v.csv"
    proc = run("value", path, "--target", "score", "--task", task, "--method", "knn",
               "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    X = StandardScaler().fit_transform(frame[["a", "b", "c"]])
    expected = KNNShapley(task=task).fit(X, frame["score"].to_numpy()).values_
    np.testing.assert_allclose(pd.read_csv(out)["value"], expected, rtol=1e-12, atol=1e-12)


def test_oob_regression_scores_squared_errors_not_accuracy(score_csv, tmp_path):
    path, _ = score_csv
    out = tmp_path / "v.csv"
    proc = run("value", path, "--target", "score", "--task", "regression", "--method", "oob",
               "--n-estimators", "20", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    values = pd.read_csv(out)["value"].dropna()
    assert (values <= 0).all() and (values < -1).any()   # -(y - prediction)**2


@pytest.mark.parametrize(
    "target, val_target, args, code, match",
    [
        (np.linspace(0, 1, 8), None, ["--task", "classification"], 1,
         "is valuing for classification, but target column 'y' is continuous"),
        ([1] * 8, None, [], 1, "needs at least 2 classes in target column 'y'"),
        ([0, 1] * 4, ["a", "b"] * 2, ["--val", "{d}/val.csv"], 1,
         "target column 'y' and the VAL target hold labels of different kinds"),
        (["cat", "dog"] * 4, None, ["--task", "regression"], 1,
         "got --task regression but target column 'y' holds non-numeric labels"),
        ([2.5] * 8, None, [], 1, "target column 'y' is constant (2.5 in every row)"),
        ([0, 1] * 4, None, ["--task", "labels"], 2, "argument --task: invalid choice"),
    ],
)
def test_bad_target_is_an_error_before_any_work(target, val_target, args, code, match,
                                                 tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path, "data.csv", pd.DataFrame({"x": rng.normal(size=8), "y": target}))
    expected = ["data.csv"]
    if val_target is not None:
        write(tmp_path, "val.csv", pd.DataFrame({"x": rng.normal(size=4), "y": val_target}))
        expected.append("val.csv")
    args = [a.format(d=tmp_path) for a in args]
    proc = run("value", tmp_path / "data.csv", "--target", "y", *args,
               "--out", tmp_path / "v.csv", "-q")
    assert_one_line(proc, code, match)
    assert files_in(tmp_path) == sorted(expected)


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize(
    "method, n_jobs, existing",
    [("shapley", 1, False), ("shapley", 2, False), ("shapley", 1, True), ("oob", 1, False)],
)
def test_ctrl_c_exits_130_and_writes_nothing(method, n_jobs, existing, label_csv, tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C, in the middle of a long fit."""
    path, _ = label_csv
    out = tmp_path / "v.csv"
    if existing:
        out.write_text("old\n")
    budget = ["--max-updates", "100000"] if method == "shapley" else ["--n-estimators",
                                                                       "1000000"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skdvl", "value", str(path), "--target", "label", "--method",
         method, *budget, "--n-jobs", str(n_jobs), "--out", str(out), "--overwrite"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )
    try:
        seen = []   # wait for the note printed just before fitting
        while not (seen and seen[-1].startswith(f"valuing 40 rows with {method}")):
            seen.append(proc.stderr.readline())
            assert seen[-1], "".join(seen)   # EOF: the command ended before fitting
        # with workers, for the progress bar to move: they are up and working (a worker
        # still importing when Ctrl-C comes prints its own traceback, as any Python does)
        bar, deadline = "", time.perf_counter() + 120
        while n_jobs > 1 and not any(
                float(done) > 0 for done in re.findall(r"\|\s*([\d.]+)/[\d.]+", bar)):
            char = proc.stderr.read(1)
            assert char and time.perf_counter() < deadline, "".join(seen) + bar
            bar += char
        time.sleep(1.5 if n_jobs == 1 else 0.5)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert time.perf_counter() - t0 < 30
    assert stderr.rstrip().endswith("skdvl: interrupted; nothing written"), stderr
    assert "Traceback" not in stderr and "Interrupted:" not in stderr
    assert stdout == ""
    if existing:
        assert out.read_text() == "old\n"
        assert files_in(tmp_path) == ["data.csv", "v.csv"]
    else:
        assert files_in(tmp_path) == ["data.csv"]


# ----------------------------------------------------------------------------- outputs
def test_existing_output_is_refused_before_reading_anything(label_csv, tmp_path):
    path, _ = label_csv
    out = tmp_path / "v.csv"
    out.write_text("mine\n")
    # the target does not exist either: the output is checked first
    proc = run("value", path, "--target", "nope", "--out", out)
    assert_one_line(proc, 1, f"skdvl value: error: --out {out} already exists; pass "
                             "--overwrite to replace it")
    assert out.read_text() == "mine\n"


def test_overwrite_replaces_an_existing_output(label_csv, tmp_path):
    path, _ = label_csv
    out = tmp_path / "v.csv"
    out.write_text("mine\n")
    proc = run("value", path, "--target", "label", "--out", out, "--overwrite", "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == 40
    assert files_in(tmp_path) == ["data.csv", "v.csv"]


@pytest.mark.parametrize(
    "command, args, match",
    [
        ("value", ["--out", "{d}"], "--out {d} is a directory; give a file path"),
        ("value", ["--out", "{d}/no/v.csv"], "output directory does not exist: {d}/no"),
        ("value", ["--out", ""], "--out is empty; give a file path"),
        ("value", ["--out", "/dev/null"], "--out /dev/null exists and is not a regular file"),
        ("clean", ["--out", "{d}/c.csv", "--values-out", "{d}/c.csv"],
         "--out and --values-out are the same file"),
        ("clean", ["--out", "{d}/c.csv", "--values-out", "{d}/data.csv"],
         "--values-out {d}/data.csv already exists; pass --overwrite"),
        ("clean", ["--out", "{d}/c.csv", "--values-out", "{d}"],
         "--values-out {d} is a directory"),
    ],
)
def test_bad_output_path_is_refused_before_any_work(command, args, match, label_csv,
                                                    tmp_path):
    path, _ = label_csv
    args = [a.format(d=tmp_path) for a in args]
    proc = run(command, path, "--target", "label", "--method", "shapley",
               "--max-updates", "100000", *args)
    assert_one_line(proc, 1, match.format(d=tmp_path))
    assert files_in(tmp_path) == ["data.csv"]


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
def test_unwritable_output_directory_is_refused(label_csv):
    path, _ = label_csv
    proc = run("value", path, "--target", "label", "--out", "/proc/skdvl-values.csv")
    assert_one_line(proc, 1, "--out /proc/skdvl-values.csv: cannot write to /proc")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_output_directory_is_refused(label_csv, tmp_path):
    path, _ = label_csv
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        proc = run("value", path, "--target", "label", "--out", locked / "v.csv")
    finally:
        locked.chmod(0o755)
    assert_one_line(proc, 1, f"cannot write to {locked}")


def test_demo_refuses_a_plot_path_holding_another_file(tmp_path):
    png = tmp_path / "mine.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot a figure of ours")
    proc = run("demo", "--plot", png, "--methods", "knn")
    assert_one_line(proc, 1, f"--plot {png} already exists; pass --overwrite")
    assert png.read_bytes().endswith(b"not a figure of ours")


def test_a_figure_the_demo_wrote_is_ours(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    ours, theirs = tmp_path / "ours.png", tmp_path / "theirs.png"
    fig.savefig(ours, format="png", metadata={"Software": "skdvl demo"})
    fig.savefig(theirs, format="png")
    plt.close(fig)
    assert _demo_png(str(ours)) and not _demo_png(str(theirs))


# ----------------------------------------------------------------------------- features
@pytest.fixture
def songs_csv(tmp_path):
    """A label, one informative feature and a huge-unit noise column (a duration in ms)."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 30)
    frame = pd.DataFrame({
        "name": [f"song {i}" for i in range(60)],
        "signal": y + 0.3 * rng.normal(size=60),
        "duration_ms": rng.normal(200_000, 30_000, size=60).round(),
        "hit": y,
    })
    return write(tmp_path, "songs.csv", frame), frame


@pytest.mark.parametrize("scale", [True, False])
def test_knn_standardises_features_unless_no_scale(scale, songs_csv, tmp_path):
    path, frame = songs_csv
    out = tmp_path / "v.csv"
    flags = [] if scale else ["--no-scale"]
    proc = run("value", path, "--target", "hit", "--drop", "name", "--method", "knn", *flags,
               "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    X = frame[["signal", "duration_ms"]].to_numpy(dtype=float)
    X = StandardScaler().fit_transform(X) if scale else X
    expected = KNNShapley().fit(X, frame["hit"].to_numpy()).values_
    np.testing.assert_allclose(pd.read_csv(out)["value"], expected, rtol=1e-12, atol=1e-12)


def test_loo_model_gets_standardised_features(songs_csv, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from skdvl import LOOValuer

    path, frame = songs_csv
    train, val = frame.iloc[::2], frame.iloc[1::2]
    data, vpath = write(tmp_path, "train.csv", train), write(tmp_path, "val.csv", val)
    out = tmp_path / "v.csv"
    proc = run("value", data, "--target", "hit", "--drop", "name", "--method", "loo",
               "--val", vpath, "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    cols = ["signal", "duration_ms"]
    scaler = StandardScaler().fit(train[cols])
    expected = LOOValuer(LogisticRegression(), scoring="accuracy").fit(
        scaler.transform(train[cols]), train["hit"].to_numpy(),
        X_val=scaler.transform(val[cols]), y_val=val["hit"].to_numpy()).values_
    np.testing.assert_allclose(pd.read_csv(out)["value"], expected, atol=1e-12)


def test_drop_keeps_the_column_in_the_cleaned_output(songs_csv, tmp_path):
    path, frame = songs_csv
    out = tmp_path / "clean.csv"
    proc = run("clean", path, "--target", "hit", "--drop", "name", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    clean = pd.read_csv(out)
    assert list(clean.columns) == list(frame.columns) and len(clean) == 54


@pytest.mark.parametrize(
    "args, match",
    [
        ([], "non-numeric feature column(s) in {p}: 'name'; drop them (--drop name)"),
        (["--drop", "name,tempo"], "--drop: no column 'tempo' in {p} (columns: 'name', "
                                   "'signal', 'duration_ms', 'hit')"),
        (["--drop", "name", "--drop", "tempo"], "--drop: no column 'tempo' in"),
        (["--drop", "name,hit"], "--drop names the target column 'hit'"),
        (["--drop", "name,signal,duration_ms"], "has no feature columns besides the target"),
    ],
)
def test_bad_drop_is_a_one_line_error(args, match, songs_csv, tmp_path):
    path, _ = songs_csv
    proc = run("value", path, "--target", "hit", *args, "--out", tmp_path / "v.csv")
    assert_one_line(proc, 1, match.format(p=path))
    assert files_in(tmp_path) == ["songs.csv"]


def test_option_a_method_does_not_use_is_a_warning(label_csv, tmp_path):
    path, _ = label_csv
    proc = run("value", path, "--target", "label", "--method", "oob", "--n-estimators", "40",
               "--n-neighbors", "3", "--out", tmp_path / "v.csv", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("skdvl: warning: --n-neighbors is ignored by --method oob "
                                   "(it applies to knn)")


# ----------------------------------------------------------------------------- domains
@pytest.mark.parametrize(
    "args, match",
    [
        (["--n-jobs", "0"], "argument --n-jobs: must be a non-zero integer (1 for one "
                            "process, -1 for all cores). Got 0."),
        (["--n-jobs", "two"], "argument --n-jobs: must be a non-zero integer. Got 'two'."),
        (["--random-state", "-1"], "argument --random-state: must be in [0, 4294967295]. "
                                   "Got -1."),
        (["--random-state", str(2**32)], "argument --random-state: must be in [0, "
                                         "4294967295]. Got 4294967296."),
        (["--n-neighbors", "0"], "argument --n-neighbors: must be a positive integer. Got 0."),
        (["--n-estimators", "2.5"], "argument --n-estimators: must be a positive integer. "
                                    "Got '2.5'."),
        (["--max-updates", "-3"], "argument --max-updates: must be a positive integer. "
                                  "Got -3."),
        (["--threshold", "nan"], "argument --threshold: must be a finite number. Got 'nan'."),
        (["--threshold=-inf"], "argument --threshold: must be a finite number. "
                                  "Got '-inf'."),
        (["--fraction", "1"], "argument --fraction: must be in [0, 1). Got 1.0."),
        (["--fraction", "-0.1"], "argument --fraction: must be in [0, 1). Got -0.1."),
        (["--drop", "a,,b"], "argument --drop: must be comma-separated column names. "
                             "Got 'a,,b'."),
    ],
)
def test_numeric_option_out_of_its_domain_is_a_usage_error(args, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["clean", "data.csv", "--target", "y", "--out", "out.csv", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("skdvl clean: error: ") and match in err, err


@pytest.mark.parametrize("noise, match", [("0", "Got 0.0."), ("0.6", "Got 0.6."),
                                          ("x", "Got 'x'.")])
def test_demo_noise_out_of_its_domain_is_a_usage_error(noise, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--noise", noise])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --noise: must be" in err and match in err, err


@pytest.mark.parametrize("splits, match", [("1", "Got 1."), ("x", "Got 'x'.")])
def test_demo_splits_below_two_are_a_usage_error(splits, match, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--splits", splits])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --splits: must be" in err and match in err, err


def test_a_repeated_warning_is_shown_once_then_counted(capsys):
    from skdvl.cli import _ShowWarning

    show = _ShowWarning()
    for _ in range(3):
        show("lbfgs failed\n  to converge", UserWarning, "f.py", 1)
    show("another", UserWarning, "f.py", 2)
    show.report_repeats()
    assert capsys.readouterr().err.splitlines() == [
        "skdvl: warning: lbfgs failed to converge",
        "skdvl: warning: another",
        "skdvl: warning: 'lbfgs failed to converge' was repeated 2 more times",
    ]


def test_outputs_get_the_mode_of_a_new_file(label_csv, tmp_path):
    path, _ = label_csv
    out = tmp_path / "v.csv"
    proc = run("value", path, "--target", "label", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
