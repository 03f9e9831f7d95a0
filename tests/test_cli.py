"""End-to-end tests of the ``skdvl`` command, run through ``python -m skdvl``."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import assert_one_line as assert_one_line_error  # noqa: E402
from cli_helpers import run  # noqa: E402


def no_stray_files(directory, expected):
    assert sorted(os.listdir(directory)) == sorted(expected)


@pytest.fixture
def data_csv(tmp_path):
    X, y = make_classification(n_samples=80, n_features=4, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_value_writes_one_value_per_row(data_csv, tmp_path):
    path, _ = data_csv
    out = tmp_path / "values.csv"
    proc = run("value", path, "--target", "label", "--method", "oob", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 80 oob values to {out}" in proc.stdout
    values = pd.read_csv(out)
    assert list(values.columns) == ["row", "value", "stderr"]
    np.testing.assert_array_equal(values["row"], np.arange(80))
    assert values["value"].between(0, 1).all()
    no_stray_files(tmp_path, ["data.csv", "values.csv"])


def test_value_is_deterministic_for_a_seed(data_csv, tmp_path):
    path, _ = data_csv
    outs = [tmp_path / f"v{i}.csv" for i in range(2)]
    for out in outs:
        assert run("value", path, "--target", "label", "--method", "oob", "--out", out,
                   "-q", "--random-state", "3").returncode == 0
    assert outs[0].read_text() == outs[1].read_text()


def test_clean_writes_the_kept_rows_with_all_columns(data_csv, tmp_path):
    path, frame = data_csv
    out, vout = tmp_path / "clean.csv", tmp_path / "v.csv"
    proc = run("clean", path, "--target", "label", "--method", "oob", "--fraction", "0.1",
               "--out", out, "--values-out", vout, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "kept 72 of 80 rows (dropped 8 with the lowest oob values)" in proc.stdout
    clean = pd.read_csv(out)
    assert list(clean.columns) == list(frame.columns) and len(clean) == 72
    values = pd.read_csv(vout)["value"].to_numpy()
    dropped = np.setdiff1d(np.arange(80), np.argsort(values, kind="stable")[8:])
    kept_rows = frame.drop(index=dropped).reset_index(drop=True)
    pd.testing.assert_frame_equal(clean, kept_rows)


def test_clean_with_threshold(data_csv, tmp_path):
    path, _ = data_csv
    out = tmp_path / "clean.csv"
    proc = run("clean", path, "--target", "label", "--method", "oob", "--threshold", "0.5",
               "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "valued below 0.5" in proc.stdout


def test_regression_target_is_cleaned(tmp_path):
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    path = tmp_path / "reg.csv"
    pd.DataFrame(X, columns=["x1", "x2", "x3"]).assign(price=y).to_csv(path, index=False)
    out = tmp_path / "clean.csv"
    proc = run("clean", path, "--target", "price", "--method", "oob", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == 54


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_default_method_is_the_measured_one_for_the_task_and_says_why(task, tmp_path):
    from skdvl.cli import DEFAULT_METHODS

    if task == "classification":
        X, y = make_classification(n_samples=40, n_features=3, n_informative=2,
                                   n_redundant=0, random_state=0)
    else:
        X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    path = tmp_path / "data.csv"
    pd.DataFrame(X, columns=["a", "b", "c"]).assign(t=y).to_csv(path, index=False)
    proc = run("value", path, "--target", "t", "--out", tmp_path / "v.csv")
    assert proc.returncode == 0, proc.stderr
    method = DEFAULT_METHODS[task]
    assert f"wrote 40 {method} values" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("method: ")]
    assert len(notes) == 1, proc.stderr
    assert notes[0].startswith(f"method: {method} (the default for {task}: the largest mean "
                               "gain over random dropping on ")
    assert notes[0].endswith("benchmark tasks, see doc/cli.md)") or \
        notes[0].endswith("flipped labels, see doc/cli.md)")


def test_a_method_given_is_named_as_given(data_csv, tmp_path):
    path, _ = data_csv
    proc = run("value", path, "--target", "label", "--method", "knn",
               "--out", tmp_path / "v.csv")
    assert proc.returncode == 0, proc.stderr
    assert "method: knn (given with --method)" in proc.stderr.splitlines()
    assert "wrote 80 knn values" in proc.stdout


def test_quiet_names_the_method_on_stdout_only(data_csv, tmp_path):
    path, _ = data_csv
    proc = run("value", path, "--target", "label", "--out", tmp_path / "v.csv", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("wrote 80 ")


def test_auto_resolves_by_task_as_the_docs_say():
    from skdvl.cli import DEFAULT_METHODS, METHODS
    from skdvl.cli._options import resolve_method

    for task in ("classification", "regression"):
        assert DEFAULT_METHODS[task] in METHODS
        assert resolve_method("auto", task)[0] == DEFAULT_METHODS[task]
        assert resolve_method("loo", task) == ("loo", "given with --method")
    docs = (Path(__file__).parents[1] / "doc" / "cli.md").read_text()
    assert (f"`--method auto` (the default) values classification targets with "
            f"`{DEFAULT_METHODS['classification']}` and regression targets with "
            f"`{DEFAULT_METHODS['regression']}`") in " ".join(docs.split())
    help_text = " ".join(run("value", "--help").stdout.split())
    assert (f"auto (the default): {DEFAULT_METHODS['classification']} for classification, "
            f"{DEFAULT_METHODS['regression']} for regression") in help_text


@pytest.mark.parametrize("method", ["knn", "loo", "shapley", "banzhaf", "beta"])
def test_other_methods(method, data_csv, tmp_path):
    _, frame = data_csv
    small = tmp_path / "small.csv"
    frame.iloc[:30].to_csv(small, index=False)
    val = tmp_path / "val.csv"
    frame.iloc[30:50].to_csv(val, index=False)
    out = tmp_path / "values.csv"
    proc = run("value", small, "--target", "label", "--method", method, "--val", val,
               "--max-updates", "2", "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == 30


@pytest.mark.parametrize(
    "setup, args, code, match",
    [
        (None, ["value", "{d}/nope.csv", "--target", "label"], 1, "DATA file not found"),
        ("data", ["value", "{d}/data.csv", "--target", "y"], 1,
         "target column 'y' not in"),
        ("text", ["value", "{d}/data.csv", "--target", "label"], 1,
         "non-numeric feature column(s) in"),
        ("empty", ["value", "{d}/data.csv", "--target", "label"], 1, "DATA file is empty"),
        ("header", ["value", "{d}/data.csv", "--target", "label"], 1,
         "DATA file has no rows"),
        ("nan", ["value", "{d}/data.csv", "--target", "label"], 1,
         "feature column 'a' in"),
        ("data", ["clean", "{d}/data.csv", "--target", "label", "--fraction", "1.5"], 2,
         "argument --fraction: must be in [0, 1). Got 1.5."),
        ("data", ["clean", "{d}/data.csv", "--target", "label", "--fraction", "x"], 2,
         "must be a number in [0, 1)"),
        ("data", ["value", "{d}/data.csv", "--target", "label", "--method", "magic"], 2,
         "argument --method: invalid choice: 'magic'"),
        ("data", ["value", "{d}/data.csv"], 2, "the following arguments are required"),
        ("data", ["value", "{d}/data.csv", "--target", "label", "--val", "{d}/no.csv"], 1,
         "VAL file not found"),
    ],
)
def test_bad_input_is_one_line_error_and_no_output(setup, args, code, match, tmp_path):
    contents = {
        "data": "a,b,label\n1,2,0\n2,3,1\n3,1,0\n4,4,1\n",
        "text": "a,b,label\nx,2,0\ny,3,1\nz,1,0\n",
        "empty": "",
        "header": "a,b,label\n",
        "nan": "a,b,label\n1,2,0\n,3,1\n3,1,0\n",
    }
    files = []
    if setup is not None:
        (tmp_path / "data.csv").write_text(contents[setup])
        files = ["data.csv"]
    args = [a.format(d=tmp_path) for a in args]
    args += ["--out", str(tmp_path / "out.csv")]
    proc = run(*args)
    assert_one_line_error(proc, code, match)
    no_stray_files(tmp_path, files)


def test_failed_run_leaves_an_existing_output_untouched(data_csv, tmp_path):
    path, _ = data_csv
    out = tmp_path / "values.csv"
    out.write_text("old\n")
    proc = run("value", path, "--target", "missing", "--out", out, "--overwrite")
    assert proc.returncode == 1
    assert out.read_text() == "old\n"
    no_stray_files(tmp_path, ["data.csv", "values.csv"])


def test_missing_output_directory_fails_before_any_work(data_csv, tmp_path):
    path, _ = data_csv
    proc = run("value", path, "--target", "label", "--out", tmp_path / "no" / "v.csv")
    assert_one_line_error(proc, 1, "output directory does not exist")


def test_help_explains_each_command():
    top = run("--help")
    assert top.returncode == 0 and "skdvl demo" in top.stdout
    for command, words in [
        ("value", ["--target", "--method", "--val", "--out", "Data-OOB", "--task",
                   "--drop", "--no-scale", "--overwrite", "standardised"]),
        ("clean", ["--fraction", "--threshold", "--values-out"]),
        ("demo", ["--plot", "--methods"]),
    ]:
        proc = run(command, "--help")
        assert proc.returncode == 0
        for word in words:
            assert word in proc.stdout, (command, word)


def test_demo_prints_the_table_and_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    proc = run("demo", "--methods", "oob,knn", "--splits", "2", "--plot", png, "-q")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("test accuracy (mean ± sd over 2 splits; 210 of 1,050 "
                               "training labels flipped, 1,500 test rows)")
    header = lines[2]
    for col in ("method", "seconds", "AUROC flipped", "drop lowest 20%", "drop random 20%",
                "lowest - random", "verdict"):
        assert col in header
    rows = {line.split()[0]: line for line in lines[4:6]}
    assert set(rows) == {"oob", "knn"}
    for line in rows.values():  # finding flipped labels on this data is easy for both
        auroc = float(line.split()[2])
        assert 0.85 < auroc <= 1.0, line
        assert line.rstrip().endswith(("helps", "hurts", "no clear effect"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_stray_files(tmp_path, ["curves.png"])


def test_demo_verdicts_compare_the_mean_difference_with_its_standard_error():
    from skdvl.cli._demo import _verdict

    assert _verdict(np.array([0.010, 0.012, 0.008, 0.011])) == "helps"
    assert _verdict(np.array([-0.010, -0.012, -0.008, -0.011])) == "hurts"
    # mean 0.002, standard error 0.0058: within twice the standard error
    assert _verdict(np.array([0.02, -0.01, 0.01, -0.012])) == "no clear effect"


def test_demo_says_when_a_method_does_not_beat_random_dropping():
    from types import SimpleNamespace

    from skdvl.cli._demo import _demo_report

    # (seconds, AUROC, accuracy without the lowest, accuracy without random rows)
    stats = {"knn": [(0.1, 0.9, 0.92, 0.90), (0.1, 0.9, 0.93, 0.90), (0.1, 0.9, 0.92, 0.91)],
             "loo": [(1.0, 0.5, 0.90, 0.90), (1.0, 0.5, 0.89, 0.90), (1.0, 0.5, 0.91, 0.90)]}
    text = _demo_report(stats, np.array([0.9, 0.9, 0.91]), SimpleNamespace(noise=0.2), 210)
    assert "loo: dropping its lowest-valued rows did not beat dropping random rows on " \
           "this data (no clear effect)." in text
    assert "knn: dropping" not in text


@pytest.mark.slow
def test_full_demo_values_with_every_method(tmp_path):
    proc = run("demo", "--plot", tmp_path / "c.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for method in ("knn", "oob", "shapley"):
        assert method in proc.stdout


def test_module_main_and_console_entry_point_agree():
    from skdvl.cli import main

    assert callable(main)
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("skdvl ")
