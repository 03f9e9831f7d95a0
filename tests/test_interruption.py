"""Ctrl-C keeps the finished work: partial values equal a run stopped by budget there.

The SIGINT tests run ``interrupt_job.py`` in a subprocess, interrupt it the way a
terminal does, and compare what the interrupted fit returned with a fit of the
same valuer stopped by ``MaxSamples`` at the samples the interrupted one kept.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from skdvl import LOOValuer, ShapleyValuer
from skdvl.games import AirportGame
from skdvl.stopping import MaxSamples

sys.path.insert(0, str(Path(__file__).parent))
import interrupt_job as job  # noqa: E402

JOB = Path(__file__).parent / "interrupt_job.py"


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal delivers it, even when this test runs in a
    background job (whose children inherit SIGINT as ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(mode: str, n_jobs: int, tmp_path: Path, after: float) -> dict:
    out = tmp_path / f"{mode}-{n_jobs}.npz"
    proc = subprocess.Popen([sys.executable, str(JOB), mode, str(n_jobs), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline().strip() == "fitting"
        assert proc.stdout.readline().strip() == "tick"  # some evaluations are done
        time.sleep(after)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigint_keeps_the_finished_permutations(n_jobs, tmp_path):
    got = _interrupt("mc", n_jobs, tmp_path, after=1.0)
    k = int(got["samples"][0])
    assert k >= 1, "no sample finished before the interrupt; the test needs a slower job"
    assert not got["converged"]
    (message,) = got["messages"]
    assert f"Interrupted: returning the partial result after {k} samples" in message
    ref = ShapleyValuer(utility=AirportGame(np.arange(1.0, job.N_PLAYERS + 1)),
                        sampler="permutation", stopping=MaxSamples(k), random_state=0).fit()
    np.testing.assert_allclose(got["values"], ref.values_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["counts"], ref.counts_)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigint_during_cross_valuation_keeps_the_game_so_far(n_jobs, tmp_path):
    got = _interrupt("cv", n_jobs, tmp_path, after=1.0)
    k = int(got["samples"][0])
    assert k >= 1 and list(got["samples"][1:]) == [-1, -1]
    X, y = job.data()
    split = next(StratifiedKFold(3).split(X, y))
    ref = ShapleyValuer(KNeighborsClassifier(1), cv=[split], sampler="permutation",
                        stopping=MaxSamples(k), random_state=0).fit(X, y)
    # Rows of the first game keep its values (not averaged with unplayed games);
    # the rows it does not value are NaN with count 0.
    np.testing.assert_allclose(got["values"], ref.values_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["counts"], ref.counts_)
    assert np.isnan(got["values"][split[1]]).all() and (got["counts"][split[1]] == 0).all()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigint_during_leave_one_out_keeps_the_rows_evaluated(n_jobs, tmp_path):
    got = _interrupt("loo", n_jobs, tmp_path, after=1.0)
    done = int(got["samples"][0])
    assert 2 <= done < 401
    game = AirportGame(np.arange(1.0, 401))
    full = game(np.arange(400))
    expected = np.full(400, np.nan)
    rows = np.arange(done - 1)
    expected[rows] = [full - game(np.delete(np.arange(400), i)) for i in rows]
    np.testing.assert_allclose(got["values"], expected, rtol=0, atol=1e-12)
    assert (got["counts"][rows] == 1).all() and (got["counts"][done - 1:] == 0).all()
    assert "Interrupted:" in got["messages"][0]


def test_sigint_during_exact_enumeration_gives_nan_and_says_how_far(tmp_path):
    got = _interrupt("exact", 1, tmp_path, after=0.5)
    assert np.isnan(got["values"]).all() and (got["counts"] == 0).all()
    assert f"Interrupted: {int(got['samples'][0])} of 65536 coalitions" in got["messages"][0]


# --------------------------------------------------------------------------- in process
class InterruptAfter:
    """A utility that raises KeyboardInterrupt at its ``limit``-th call."""

    def __init__(self, limit: int, n_players: int = 8) -> None:
        self.game = AirportGame(np.arange(1.0, n_players + 1))
        self.n_players, self.limit, self.calls = n_players, limit, 0

    def __call__(self, subset):
        self.calls += 1
        if self.calls == self.limit:
            raise KeyboardInterrupt
        return self.game(subset)


def test_warm_start_after_an_interrupt_continues_to_the_uninterrupted_result():
    utility = InterruptAfter(limit=30)
    v = ShapleyValuer(utility=utility, sampler="permutation", max_updates=12, random_state=3,
                      warm_start=True)
    # 29 calls finish: 4 permutations of 8 players (a coalition met twice is evaluated once)
    with pytest.warns(RuntimeWarning, match="Interrupted: returning the partial result "
                                            r"after 4 samples \(29 utility evaluations\)"):
        v.fit()
    assert (v.counts_ == 4).all() and not v.converged_
    v.fit()  # the same utility object, continued
    ref = ShapleyValuer(utility=utility.game, sampler="permutation", max_updates=12,
                        random_state=3).fit()
    np.testing.assert_allclose(v.values_, ref.values_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(v.counts_, ref.counts_)


def test_interrupted_exact_enumeration_resumes_with_warm_start():
    utility = InterruptAfter(limit=100)
    v = ShapleyValuer(utility=utility, sampler="exact", warm_start=True)
    with pytest.warns(RuntimeWarning, match=r"Interrupted: \d+ of 256 coalitions"):
        v.fit()
    assert np.isnan(v.values_).all() and not v.converged_
    v.fit()
    np.testing.assert_allclose(v.values_, utility.game.shapley_values(), atol=1e-12)
    assert v.converged_ and v.n_utility_evaluations_ == 256


def test_cross_valuation_averages_only_the_games_that_reached_a_row():
    X, y = job.data()

    class StopInSecondGame(KNeighborsClassifier):
        calls = 0

        def fit(self, X, y):
            type(self).calls += 1
            if type(self).calls == 120:
                raise KeyboardInterrupt
            return super().fit(X, y)

    v = ShapleyValuer(StopInSecondGame(1), cv=3, sampler="permutation", max_updates=5,
                      random_state=0)
    with pytest.warns(RuntimeWarning, match="Interrupted"):
        v.fit(X, y)
    s0, s1, s2 = v._states_
    assert s0.n_samples == 5 and 1 <= s1.n_samples < 5 and s2 is None
    splits = list(StratifiedKFold(3).split(X, y))
    per_game = []
    for state, (train, _) in zip((s0, s1), splits):
        full = np.full(len(y), np.nan)
        full[train] = ShapleyValuer._samplers["permutation"]().result(state.moments).values
        per_game.append(full)
    expected = np.nanmean(np.vstack(per_game), axis=0)  # NaN only where no game played
    np.testing.assert_allclose(v.values_, expected, rtol=0, atol=1e-12)
    # The first game alone equals a budget-stopped run of that game.
    ref = ShapleyValuer(KNeighborsClassifier(1), cv=[splits[0]], sampler="permutation",
                        max_updates=5, random_state=0).fit(X, y)
    np.testing.assert_allclose(per_game[0], ref.values_, rtol=0, atol=1e-12)


def test_interrupted_loo_in_process_keeps_rows_evaluated():
    utility = InterruptAfter(limit=5)
    with pytest.warns(RuntimeWarning, match="Interrupted: 4 of 9 coalitions"):
        v = LOOValuer(utility=utility).fit()
    # Tasks of one coalition each: u(N) and u(N - i) for i = 0, 1, 2 finished.
    game, everyone = utility.game, np.arange(8)
    expected = [game(everyone) - game(np.delete(everyone, i)) for i in range(3)]
    np.testing.assert_allclose(v.values_[:3], expected, rtol=0, atol=1e-12)
    assert np.isnan(v.values_[3:]).all() and (v.counts_ == [1, 1, 1, 0, 0, 0, 0, 0]).all()
