"""The ``skdvl`` command (also ``python -m skdvl``): demo, value and clean.

Errors in the input (a missing file, an unknown column, non-numeric features, empty
data, an option out of its range, an output path that exists) end the command with
one line on stderr and a non-zero exit status: 2 for bad command-line usage, 1 for
bad data or a failed computation, 130 for Ctrl-C. Output paths are checked before
any work; outputs are written to a temporary file next to the target and renamed
into place only when complete, so a failed or interrupted run never leaves a
partial file. Set ``SKDVL_DEBUG=1`` to see tracebacks.

The target's task (``--task``) follows :func:`skdvl.base.resolve_task`, and the
command chooses every model and score from it itself. Features are standardised on
DATA's rows for every method but oob (``--no-scale`` to turn it off).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["main"]

METHODS = ("knn", "oob", "shapley", "banzhaf", "beta", "loo")
TASKS = ("auto", "classification", "regression")
# option -> (default, methods that use it); None in args means "not given"
_METHOD_OPTIONS = {
    "n_neighbors": (5, ("knn",)),
    "n_estimators": (100, ("oob",)),
    "max_updates": (50, ("shapley", "banzhaf", "beta")),
}
_PNG_MARK = b"tEXtSoftware\x00skdvl demo"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- Ctrl-C
class _Sigint:
    """SIGINT handler that records the interrupt, then raises KeyboardInterrupt.

    Valuers catch KeyboardInterrupt and return a partial result with a warning; the
    record lets the command notice it anyway, and exit 130 without writing.
    """

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt


_SIGINT = _Sigint()


@contextmanager
def _handle_sigint() -> Iterator[None]:
    _SIGINT.seen = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- options
def _number(text: str, kind: type, rule: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {rule}. Got {text!r}.") from None
    return value


def _fraction(text: str) -> float:
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1). Got {value}.")
    return float(value)


def _finite(text: str) -> float:
    value = _number(text, float, "a finite number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number. Got {text!r}.")
    return float(value)


def _positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Got {value}.")
    return int(value)


def _n_jobs(text: str) -> int:
    value = _number(text, int, "a non-zero integer")
    if value == 0:
        raise argparse.ArgumentTypeError(
            "must be a non-zero integer (1 for one process, -1 for all cores). Got 0.")
    return int(value)


def _seed(text: str) -> int:
    value = _number(text, int, "an integer in [0, 4294967295]")
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 4294967295]. Got {value}.")
    return int(value)


def _columns(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated column names. Got {text!r}.")
    return names


# ----------------------------------------------------------------------------- input
def _list(names: Sequence[Any], limit: int = 30) -> str:
    shown = ", ".join(map(repr, list(names)[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _read_table(path: str, target: str, drop: Sequence[str] = (),
                what: str = "DATA") -> tuple[Any, Any, Any]:
    """Read a CSV; return (the whole frame, numeric features, target).

    ``drop`` names columns that are not features; each must be in a DATA file (a
    VAL file may lack them).
    """
    import pandas as pd

    if not os.path.isfile(path):
        raise CLIError(f"{what} file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CLIError(f"{what} file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot parse {path} as CSV: {_one_line(exc)}") from None
    if target not in frame.columns:
        raise CLIError(f"target column {target!r} not in {path} (columns: "
                       f"{_list(frame.columns)})")
    unknown = [c for c in drop if c not in frame.columns]
    if unknown and what == "DATA":
        raise CLIError(f"--drop: no column {_list(unknown)} in {path} (columns: "
                       f"{_list(frame.columns)})")
    if target in drop:
        raise CLIError(f"--drop names the target column {target!r}; drop only features")
    if len(frame) == 0:
        raise CLIError(f"{what} file has no rows: {path}")
    X = frame.drop(columns=[target, *(c for c in drop if c in frame.columns)])
    if X.shape[1] == 0:
        raise CLIError(f"{path} has no feature columns besides the target {target!r}")
    _check_features(X, path)
    y = frame[target]
    if y.isna().any():
        raise CLIError(f"target column {target!r} in {path} has {int(y.isna().sum())} "
                       "missing values; drop those rows first")
    return frame, X.astype(np.float64), y


def _check_features(X: Any, path: str) -> None:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [c for c in X.columns if not (is_numeric_dtype(X[c]) or is_bool_dtype(X[c]))]
    if bad:
        raise CLIError(
            f"non-numeric feature column(s) in {path}: {_list(bad, 5)}; drop them "
            f"(--drop {','.join(map(str, bad))}) or encode them as numbers first (e.g. "
            "one-hot with pandas.get_dummies)")
    values = X.to_numpy(dtype=np.float64)
    bad_rows = ~np.isfinite(values)
    if bad_rows.any():
        j = int(bad_rows.any(axis=0).nonzero()[0][0])
        col, n_bad = X.columns[j], int(bad_rows[:, j].sum())
        kind = "missing" if np.isnan(values[:, j]).any() else "infinite"
        raise CLIError(f"feature column {col!r} in {path} has {n_bad} {kind} values; "
                       "impute or drop them first")


# ----------------------------------------------------------------------------- outputs
def _check_out(path: str, option: str, overwrite: bool,
               ours: Callable[[str], bool] | None = None) -> None:
    """Refuse, before any work, an output path the command could not or should not write.

    ``ours`` says whether an existing file is one this command wrote (then it may be
    replaced without ``--overwrite``).
    """
    if not path:
        raise CLIError(f"{option} is empty; give a file path")
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise CLIError(f"{option} {path} is a directory; give a file path")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise CLIError(f"{option} {path}: output directory does not exist: {parent}")
    if os.path.lexists(full):
        if os.path.islink(full) or not os.path.isfile(full):
            raise CLIError(f"{option} {path} exists and is not a regular file; "
                           "choose another path")
        if not (overwrite or (ours is not None and ours(full))):
            raise CLIError(f"{option} {path} already exists; pass --overwrite to replace it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".skdvl-", dir=parent)
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write to {parent} "
                       f"({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(probe)


def _check_outs(args: Any, *options: str) -> None:
    """Check each output option that is set; two outputs must not share a path."""
    seen: dict[str, str] = {}
    for option in options:
        path = getattr(args, option.lstrip("-").replace("-", "_"))
        if path is None:
            continue
        ours = _demo_png if option == "--plot" else None
        _check_out(path, option, args.overwrite, ours)
        full = os.path.realpath(path)
        if full in seen:
            raise CLIError(f"{seen[full]} and {option} are the same file ({path})")
        seen[full] = option


def _demo_png(path: str) -> bool:
    """Whether ``path`` is a figure that ``skdvl demo`` wrote (it carries our tag)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and _PNG_MARK in head


@contextmanager
def _atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path``, renamed to it only if the block succeeds.

    An interrupt (Ctrl-C) seen at any point before the rename means no rename.
    """
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".skdvl-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        _SIGINT.check()
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _file_mode(path: str) -> int:
    """The mode of the file it replaces, else that of a new file (not mkstemp's 0600)."""
    if os.path.isfile(path):
        return os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _one_line(exc: BaseException | Warning | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- targets
def _cli_words(message: str, target: str) -> str:
    """A message of :mod:`skdvl.base` in the command's words (options, not parameters)."""
    message = re.sub(r"^skdvl:?\s*", "", message)
    message = re.sub(r"task='(\w+)'", r"--task \1", message)
    message = message.replace(" or a regressor", "")
    message = re.sub(r"\by_val\b", "the VAL target", message)
    return re.sub(r"(?<!')\by\b(?!')", f"target column {target!r}", message)


def _resolve_task(args: Any, y: Any, y_val: Any) -> str:
    """The task for ``--task`` and the target, by the rule of :func:`skdvl.base.resolve_task`.

    Bad targets for that task (continuous labels, one class, VAL labels of another
    kind, a constant quantity) are a CLIError before any work.
    """
    from skdvl.base import check_targets, resolve_task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            task = resolve_task(y, args.task, "skdvl")
            check_targets(y, y_val, task, "skdvl")
        except ValueError as exc:
            raise CLIError(_cli_words(_one_line(exc), args.target)) from None
    for w in caught:
        warnings.warn(_cli_words(_one_line(w.message), args.target), UserWarning,
                      stacklevel=2)
    if task == "regression" and np.unique(np.asarray(y, dtype=np.float64)).size < 2:
        raise CLIError(f"target column {args.target!r} is constant ({y.iloc[0].item()!r} in every "
                       "row); every value would be 0")
    return task


# ----------------------------------------------------------------------------- valuers
def _model(task: str) -> Any:
    """The model of the utility-based methods, for features already standardised."""
    from sklearn.linear_model import LogisticRegression, Ridge

    return Ridge() if task == "regression" else LogisticRegression()


def _set_if_known(valuer: Any, **params: Any) -> Any:
    """Set the parameters ``valuer`` has (``task``, ``verbose`` are not on every valuer)."""
    known = valuer.get_params(deep=False)
    return valuer.set_params(**{k: v for k, v in params.items() if k in known})


def _option(args: Any, name: str) -> Any:
    value = getattr(args, name)
    return _METHOD_OPTIONS[name][0] if value is None else value


def make_valuer(method: str, *, task: str, args: Any, estimator: Any = None) -> Any:
    """The valuer for ``method`` with the command's settings.

    ``task`` is "classification" or "regression" and chooses every model and score
    explicitly. ``estimator`` is the model of utility-based methods; None means a
    logistic regression (ridge for regression).
    """
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    from skdvl import (
        BanzhafValuer,
        BetaShapleyValuer,
        DataOOBValuer,
        KNNShapley,
        LOOValuer,
        ShapleyValuer,
    )

    regression = task == "regression"
    optional = dict(task=task, verbose=0 if args.quiet else 1)
    if method == "oob":
        tree = DecisionTreeRegressor() if regression else DecisionTreeClassifier()
        valuer = DataOOBValuer(tree, n_estimators=_option(args, "n_estimators"),
                               n_jobs=args.n_jobs, random_state=args.random_state)
        return _set_if_known(valuer, **optional)
    if method == "knn":
        valuer = KNNShapley(n_neighbors=_option(args, "n_neighbors"), n_jobs=args.n_jobs)
        return _set_if_known(valuer, **optional)
    model = _model(task) if estimator is None else estimator
    common: dict[str, Any] = dict(estimator=model, scoring="r2" if regression else "accuracy",
                                  n_jobs=args.n_jobs)
    if method == "loo":
        return _set_if_known(LOOValuer(**common), **optional)
    budget = dict(max_updates=_option(args, "max_updates"), random_state=args.random_state)
    if method == "shapley":
        return _set_if_known(ShapleyValuer(**common, **budget, truncation=0.01), **optional)
    cls = {"banzhaf": BanzhafValuer, "beta": BetaShapleyValuer}[method]
    return _set_if_known(cls(**common, **budget), **optional)


# ----------------------------------------------------------------------------- commands
def _load(args: Any) -> tuple[Any, Any, Any, Any, Any]:
    frame, X, y = _read_table(args.data, args.target, args.drop)
    X_val = y_val = None
    if args.val:
        _, X_val, y_val = _read_table(args.val, args.target, args.drop, what="VAL")
        if list(X_val.columns) != list(X.columns):
            raise CLIError(f"{args.val} must have the same feature columns as {args.data} "
                           f"({_list(X.columns)}); got {_list(X_val.columns)}")
    return frame, X, y, X_val, y_val


def _warn_unused(args: Any) -> None:
    for name, (_, methods) in _METHOD_OPTIONS.items():
        if getattr(args, name) is not None and args.method not in methods:
            option = "--" + name.replace("_", "-")
            warnings.warn(f"{option} is ignored by --method {args.method} (it applies to "
                          f"{', '.join(methods)})", UserWarning, stacklevel=2)


def _scale(args: Any, X: Any, X_val: Any) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Features as arrays, standardised on DATA's rows unless ``--no-scale`` (or oob)."""
    from sklearn.preprocessing import StandardScaler

    X = X.to_numpy(dtype=np.float64)
    X_val = None if X_val is None else X_val.to_numpy(dtype=np.float64)
    if args.no_scale or args.method == "oob":
        return X, X_val, False
    scaler = StandardScaler().fit(X)
    return scaler.transform(X), None if X_val is None else scaler.transform(X_val), True


def _fit_values(args: Any, X: Any, y: Any, X_val: Any, y_val: Any) -> tuple[Any, float]:
    task = _resolve_task(args, y, y_val)
    _warn_unused(args)
    valuer = make_valuer(args.method, task=task, args=args)
    X, X_val, scaled = _scale(args, X, X_val)
    _note(args, f"valuing {len(y)} rows with {args.method} ({task} on {args.target!r}, "
                f"features {'standardised' if scaled else 'as they are'}) ...")
    y = np.asarray(y)
    t0 = time.perf_counter()
    if X_val is None:
        valuer.fit(X, y)
    else:
        valuer.fit(X, y, X_val=X_val, y_val=np.asarray(y_val))
    _SIGINT.check()
    values = np.asarray(valuer.values_, dtype=np.float64)
    n_nan = int(np.isnan(values).sum())
    if n_nan == values.size:
        raise CLIError(f"{args.method} could not value any row (every value is NaN)")
    if n_nan:
        warnings.warn(f"{n_nan} of {values.size} rows have no {args.method} value (NaN); "
                      "they are written as empty and never dropped", UserWarning, stacklevel=2)
    return valuer, time.perf_counter() - t0


def _values_frame(valuer: Any) -> Any:
    import pandas as pd

    values = np.asarray(valuer.values_, dtype=np.float64)
    stderr = np.asarray(getattr(valuer, "stderr_", np.full_like(values, np.nan)))
    return pd.DataFrame({"value": values, "stderr": stderr},
                        index=pd.RangeIndex(len(values), name="row"))


def cmd_value(args: Any) -> int:
    """``skdvl value``: write one value per row of DATA."""
    _check_outs(args, "--out")
    _, X, y, X_val, y_val = _load(args)
    valuer, seconds = _fit_values(args, X, y, X_val, y_val)
    frame = _values_frame(valuer)
    with _atomic_path(args.out) as tmp:
        frame.to_csv(tmp)
    print(f"wrote {len(frame)} {args.method} values to {args.out} ({seconds:.1f} s)")
    return 0


def cmd_clean(args: Any) -> int:
    """``skdvl clean``: write DATA without its lowest-valued rows."""
    from skdvl.cleaning import rows_to_keep

    _check_outs(args, "--out", "--values-out")
    frame, X, y, X_val, y_val = _load(args)
    valuer, seconds = _fit_values(args, X, y, X_val, y_val)
    values = np.asarray(valuer.values_, dtype=np.float64)
    kept = rows_to_keep(values, fraction=args.fraction, threshold=args.threshold)
    if kept.size == 0:
        raise CLIError(f"--threshold {args.threshold} would drop all {len(y)} rows")
    with _atomic_path(args.out) as tmp:
        frame.iloc[kept].to_csv(tmp, index=False)
        if args.values_out:
            with _atomic_path(args.values_out) as tmp_values:
                _values_frame(valuer).to_csv(tmp_values)
    rule = (f"valued below {args.threshold}" if args.threshold is not None
            else f"with the lowest {args.method} values")
    print(f"kept {kept.size} of {len(y)} rows (dropped {len(y) - kept.size} {rule}) "
          f"-> {args.out} ({seconds:.1f} s)")
    return 0


def _note(args: Any, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- parser
_DESCRIPTION = """\
Data valuation for scikit-learn users: value every training row, find the harmful
ones (e.g. mislabelled) and drop them.

  skdvl demo                                   see it work on bundled data
  skdvl value data.csv --target label --out values.csv
  skdvl clean data.csv --target label --fraction 0.1 --out clean.csv
  skdvl value songs.csv --target popularity --task regression --drop artist,song \\
      --out values.csv
"""

_METHOD_HELP = """valuation method: knn (exact KNN-Shapley, fast, the default), oob
(Data-OOB: out-of-bag scores of bagged trees),
shapley (truncated Monte Carlo Shapley of a logistic/ridge model, slow), banzhaf (MSR
Banzhaf), beta (Beta(16,1)-Shapley), loo (leave-one-out)"""

_TASK_HELP = """what the target is: classification (labels) or regression (a
quantity). It chooses every model and score: logistic regression scored by accuracy
or ridge scored by R^2 (shapley/banzhaf/beta/loo), knn's classification or
regression game, classification trees scored by accuracy or regression trees scored
by -(squared error) (oob). auto (the default):
a target whose values are not all integers is a regression target, anything else
(strings, booleans, integers) is class labels; an integer target with more than 20
distinct values (a 0-100 score) is still taken as labels, with a warning: pass
--task regression for a quantity, --task classification to confirm"""

_SCALE_HELP = """use the features as they are. By default every feature is
standardised (zero mean, unit variance, fitted on DATA's rows and applied to VAL)
for knn, whose distances would otherwise be ruled by the feature with the largest
unit (a duration in ms), and for shapley/banzhaf/beta/loo, whose logistic/ridge model
would otherwise penalise features by their unit and often fail to converge; oob's
trees do not depend on scale and get the features as they are"""

_OVERWRITE_HELP = "replace output files that already exist (refused by default)"


def _add_data_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("data", metavar="DATA.csv", help="CSV with a header row; every "
                   "column but the target (and those of --drop) is a numeric feature")
    p.add_argument("--target", required=True, metavar="COL", help="name of the target column")
    p.add_argument("--out", required=True, metavar="PATH", help=out_help)
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    p.add_argument("--method", choices=METHODS, default="knn", help=_METHOD_HELP)
    p.add_argument("--task", choices=TASKS, default="auto", help=_TASK_HELP)
    p.add_argument("--drop", type=_columns, action="extend", default=[],
                   metavar="COL[,COL...]", help="columns that are not features (names, "
                   "ids, free text; may repeat): kept in the output of clean, not used "
                   "for valuing")
    p.add_argument("--no-scale", action="store_true", help=_SCALE_HELP)
    p.add_argument("--val", metavar="VAL.csv", help="validation rows, same columns as "
                   "DATA (knn/shapley/banzhaf/beta/loo; default: leave-self-out for knn, "
                   "5-fold cross-valuation for the others, oob needs none)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-neighbors", type=_positive_int, default=None, metavar="K",
                   help="neighbours for knn, >= 1 (default: 5)")
    p.add_argument("--n-estimators", type=_positive_int, default=None, metavar="B",
                   help="bagged trees for oob, >= 1 (default: 100)")
    p.add_argument("--max-updates", type=_positive_int, default=None, metavar="N",
                   help="Monte Carlo budget for shapley/banzhaf/beta, >= 1 (default: 50)")
    p.add_argument("--n-jobs", type=_n_jobs, default=None, metavar="J",
                   help="parallel jobs, non-zero (default: 1; -1 for all cores)")
    p.add_argument("--random-state", type=_seed, default=0, metavar="SEED",
                   help="seed in [0, 2**32 - 1]; same seed, same values (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or notes on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The ``skdvl`` argument parser."""
    parser = _Parser(prog="skdvl", description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    import skdvl
    from skdvl._cli_demo import add_demo_parser

    parser.add_argument("--version", action="version", version=f"skdvl {skdvl.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_demo_parser(sub)
    value = sub.add_parser("value", help="write one value per row of DATA.csv",
                           description="Value every row of DATA.csv; write a CSV with "
                           "columns row, value, stderr (row = 0-based position in DATA).")
    _add_data_args(value, "where to write the values CSV")
    value.set_defaults(func=cmd_value)
    clean = sub.add_parser("clean", help="write DATA.csv without its lowest-valued rows",
                           description="Value every row of DATA.csv and write it back "
                           "without the lowest-valued rows (all columns, same order).")
    _add_data_args(clean, "where to write the cleaned CSV")
    how = clean.add_mutually_exclusive_group()
    how.add_argument("--fraction", type=_fraction, default=0.1,
                     help="share of rows to drop, in [0, 1) (default: 0.1)")
    how.add_argument("--threshold", type=_finite, default=None,
                     help="drop the rows valued below this (a finite number) instead")
    clean.add_argument("--values-out", metavar="PATH", help="also write the values CSV")
    clean.set_defaults(func=cmd_clean)
    return parser


class _ShowWarning:
    """``warnings.showwarning`` for the command: one line each, a repeated one only once.

    The fits inside a valuation can raise the same warning thousands of times (a
    ConvergenceWarning per fit); :meth:`report_repeats` then says how often.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, message: Any, category: Any, filename: str, lineno: int,
                 file: Any = None, line: Any = None) -> None:
        text = _one_line(message)
        if _SIGINT.seen and text.startswith("Interrupted"):
            return  # the command reports the interrupt itself, and writes nothing
        self.counts[text] = self.counts.get(text, 0) + 1
        if self.counts[text] == 1:
            print(f"skdvl: warning: {text}", file=sys.stderr)

    def report_repeats(self) -> None:
        for text, count in self.counts.items():
            if count > 1:
                short = text if len(text) <= 60 else text[:57] + "..."
                print(f"skdvl: warning: {short!r} was repeated {count - 1} more times",
                      file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skdvl`` command; return its exit status.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after ``skdvl``; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 for bad data or a failed computation, 2 for bad usage,
        130 for Ctrl-C.
    """
    debug = os.environ.get("SKDVL_DEBUG", "") not in ("", "0")
    previous: Callable = warnings.showwarning
    show = warnings.showwarning = _ShowWarning()
    with _handle_sigint():
        try:
            args = build_parser().parse_args(argv)
            return int(args.func(args))
        except KeyboardInterrupt:
            print("skdvl: interrupted; nothing written", file=sys.stderr)
            return 130
        except CLIError as exc:
            print(f"skdvl {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:
            if debug:
                raise
            print(f"skdvl {args.command}: error: {type(exc).__name__}: {_one_line(exc)}",
                  file=sys.stderr)
            return 1
        finally:
            show.report_repeats()
            warnings.showwarning = previous
