"""KNNShapley never gives silently wrong values: targets, parameter domains, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sklearn

import skdvl.valuation._knn as knn_module
from skdvl.valuation._knn import KNNShapley


@pytest.fixture
def seed():
    return 0


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------
# Targets.
# --------------------------------------------------------------------------------------


def test_integer_target_with_many_values_warns_naming_task(rng):
    X, y = rng.normal(size=(100, 2)), rng.integers(0, 100, 100)
    with pytest.warns(UserWarning, match=r"KNNShapley: y holds \d+ distinct integer values.*"
                                         r"pass task='regression'"):
        assert KNNShapley().fit(X, y).task_ == "classification"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert KNNShapley(task="regression").fit(X, y).task_ == "regression"
        assert KNNShapley(task="classification").fit(X, y).task_ == "classification"


@pytest.mark.parametrize(
    "params, y, y_val, match",
    [
        ({"task": "classification"}, "continuous", None, r"y is continuous"),
        ({}, "ints", "strings", r"y and y_val hold labels of different kinds"),
        ({}, "integral_floats", "strings", r"y and y_val hold labels of different kinds"),
        ({}, "strings", "ints", r"y and y_val hold labels of different kinds"),
        ({}, "continuous", "strings", r"y_val must be numeric for regression"),
        ({}, "mixed", None, r"y mixes label types \(int, str\)"),
        ({}, "ints", "mixed", r"y_val mixes label types"),
        ({}, "single", None, r"needs at least 2 classes in y .*got only 1"),
        ({}, "ints", "other_ints", r"no label of y_val occurs in y"),
        ({"task": "classification"}, "ints", "continuous", r"y_val is continuous"),
    ],
)
def test_targets_a_task_cannot_use_raise_naming_the_argument(rng, params, y, y_val, match):
    codes = np.r_[0, 1, rng.integers(0, 2, 18)]
    targets = {
        "continuous": rng.normal(size=20),
        "ints": codes,
        "integral_floats": codes.astype(float),
        "strings": np.array(["ant", "bee"])[codes],
        "mixed": np.array([1 if c else "a" for c in codes], dtype=object),
        "single": np.ones(20, dtype=int),
        "other_ints": codes + 5,
    }
    X = rng.normal(size=(20, 2))
    kw = {} if y_val is None else {"X_val": X, "y_val": targets[y_val]}
    with pytest.raises(ValueError, match=match):
        KNNShapley(3, **params).fit(X, targets[y], **kw)


def test_single_class_against_labelled_validation_rows_is_exact():
    # One training class is a valid game when X_val is given. With every row of the
    # validation label and K = 1, u(S) = 1 for every non-empty S: a symmetric game,
    # so each of the 3 rows gets u(N) / 3. With the other label, rows get 0 and the
    # validation row is told apart (no label of y_val in y raises instead).
    X = np.array([[0.0], [1.0], [2.0]])
    v = KNNShapley(1).fit(X, [0, 0, 0], X_val=[[0.1], [1.9]], y_val=[0, 0])
    np.testing.assert_allclose(v.values_, [1 / 3, 1 / 3, 1 / 3], atol=1e-15)
    with pytest.raises(ValueError, match="no label of y_val occurs in y"):
        KNNShapley(1).fit(X, [0, 0, 0], X_val=[[0.1]], y_val=[1])


# --------------------------------------------------------------------------------------
# Parameter domains.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_jobs": 0}, r"'n_jobs' parameter of KNNShapley must be .*Got 0 instead"),
        ({"p": np.inf}, r"'p' parameter of KNNShapley .*Got inf instead"),
        ({"p": np.nan}, r"'p' parameter of KNNShapley .*Got nan instead"),
        ({"n_neighbors": -3}, r"'n_neighbors' parameter of KNNShapley .*Got -3 instead"),
        ({"verbose": -1}, r"'verbose' parameter of KNNShapley .*Got -1 instead"),
        ({"algorithm": "annoy"}, r"'algorithm' parameter of KNNShapley .*Got 'annoy'"),
    ],
)
def test_parameters_outside_their_domain_raise(rng, params, match):
    X, y = rng.normal(size=(10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        KNNShapley(**params).fit(X, y)


# --------------------------------------------------------------------------------------
# Interruption.
# --------------------------------------------------------------------------------------


def _interrupt_at(monkeypatch, call):
    real = knn_module._block_moments
    calls = [0]

    def block(*args):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(knn_module, "_block_moments", block)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_interrupt_keeps_finished_blocks_and_equals_fewer_validation_rows(
        rng, monkeypatch, task):
    X, X_val = rng.normal(size=(80, 3)), rng.normal(size=(64, 3))
    if task == "classification":
        y, y_val = rng.integers(0, 3, 80), rng.integers(0, 3, 64)
    else:
        y, y_val = rng.normal(size=80), rng.normal(size=64)
    _interrupt_at(monkeypatch, 4)  # 16 blocks of 4 rows; the 4th raises
    with pytest.warns(RuntimeWarning, match=r"^Interrupted: KNNShapley returns values "
                                            r"averaged over the (\d+) of 64 validation"):
        v = KNNShapley(5, task=task).fit(X, y, X_val=X_val, y_val=y_val)
    m = int(v.counts_[0])
    assert m in (4, 8, 12) and (v.counts_ == m).all()
    monkeypatch.undo()
    budget = KNNShapley(5, task=task).fit(X, y, X_val=X_val[:m], y_val=y_val[:m])
    np.testing.assert_allclose(v.values_, budget.values_, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(v.stderr_, budget.stderr_, rtol=1e-9, atol=1e-15)


def test_interrupt_leave_self_out_averages_the_games_played(rng, monkeypatch):
    X, y = rng.normal(size=(64, 2)), rng.integers(0, 2, 64)
    _interrupt_at(monkeypatch, 2)  # blocks of 4 validation rows; only block 0 finishes
    with pytest.warns(RuntimeWarning, match=r"over the 4 of 64 validation rows processed "
                                            r"\(1 of 16 blocks\)"):
        v = KNNShapley(3).fit(X, y)
    monkeypatch.undo()
    games = np.full((4, 64), np.nan)  # games[j, i]: row i in the game of row j < 4
    for j in range(4):
        others = np.delete(np.arange(64), j)
        games[j, others] = KNNShapley(3).fit(X[others], y[others], X_val=X[j:j + 1],
                                             y_val=y[j:j + 1]).values_
    np.testing.assert_array_equal(v.counts_, np.r_[[3] * 4, [4] * 60])
    np.testing.assert_allclose(v.values_, np.nanmean(games, axis=0), atol=1e-14)


def test_interrupt_before_any_block_propagates(rng, monkeypatch):
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        KNNShapley(3).fit(rng.normal(size=(30, 2)), np.arange(30) % 2)


def test_rows_no_finished_block_reached_are_nan_with_count_zero(rng, monkeypatch):
    # Leave-self-out with blocks of one row: after the first game only row 0 was
    # not valued (it is the validation row of that game).
    X, y = rng.normal(size=(20, 2)), np.arange(20) % 2
    _interrupt_at(monkeypatch, 2)
    with sklearn.config_context(working_memory=0.0001), \
            pytest.warns(RuntimeWarning, match=r"over the 1 of 20 validation rows"):
        v = KNNShapley(3).fit(X, y)
    assert v.counts_[0] == 0 and np.isnan(v.values_[0]) and np.isinf(v.stderr_[0])
    assert (v.counts_[1:] == 1).all() and np.isfinite(v.values_[1:]).all()


_SIGINT_SCRIPT = textwrap.dedent("""
    import json, sys, time, warnings
    import numpy as np
    import skdvl.valuation._knn as knn
    from skdvl.valuation._knn import KNNShapley

    n_jobs = int(sys.argv[1])
    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(400, 3)), rng.normal(size=(320, 3))
    y, y_val = rng.integers(0, 2, 400), rng.integers(0, 2, 320)
    real = knn._block_moments

    def slow(*args):
        out = real(*args)
        time.sleep(0.2)
        print("block", flush=True)
        return out

    knn._block_moments = slow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = KNNShapley(5, n_jobs=n_jobs).fit(X, y, X_val=X_val, y_val=y_val)
    knn._block_moments = real
    m = int(v.counts_[0])
    ref = KNNShapley(5).fit(X, y, X_val=X_val[:m], y_val=y_val[:m])
    print(json.dumps({
        "m": m, "same_counts": bool((v.counts_ == m).all()),
        "max_diff": float(np.max(np.abs(v.values_ - ref.values_))),
        "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning],
    }), flush=True)
""")



def _default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it, even when this test runs in a
    background job (whose children inherit SIGINT as ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigint_returns_the_partial_result(tmp_path, n_jobs):
    script = tmp_path / "interrupt.py"
    script.write_text(_SIGINT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(n_jobs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_default_sigint)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("block")
        if seen == 3:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # a worker still running may print "block" between the report and its newline
    report, _ = json.JSONDecoder().raw_decode(out[out.rfind('{"m"'):])
    # Blocks of 20 rows. The signal may land in the third block after its print but
    # before it returns: one job keeps at least 2 blocks; two keep a prefix.
    assert (40 if n_jobs == 1 else 20) <= report["m"] < 320 and report["m"] % 20 == 0
    assert report["same_counts"] and report["max_diff"] < 1e-12
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith(
        f"Interrupted: KNNShapley returns values averaged over the {report['m']} of 320 "
        "validation rows processed")
