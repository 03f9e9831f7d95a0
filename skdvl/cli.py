"""The ``skdvl`` command (also ``python -m skdvl``): demo, value and clean.

Errors in the input (a missing file, an unknown column, non-numeric features, empty
data, a fraction out of range) end the command with one line on stderr and a non-zero
exit status: 2 for bad command-line usage, 1 for bad data or a failed computation.
Outputs are written to a temporary file next to the target and renamed into place
only when complete, so a failed run never leaves a partial file. Set
``SKDVL_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["main"]

METHODS = ("knn", "oob", "shapley", "banzhaf", "beta", "loo")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- input
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number in [0, 1). Got {text!r}.") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1). Got {value}.")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Got {text!r}.") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Got {value}.")
    return value


def _read_table(path: str, target: str, what: str = "DATA") -> tuple[Any, Any, Any]:
    """Read a CSV; return (the whole frame, numeric features, target)."""
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
        cols = ", ".join(map(repr, list(frame.columns)[:10]))
        raise CLIError(f"target column {target!r} not in {path} (columns: {cols})")
    if len(frame) == 0:
        raise CLIError(f"{what} file has no rows: {path}")
    X = frame.drop(columns=[target])
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
        shown = ", ".join(map(repr, bad[:5])) + (" ..." if len(bad) > 5 else "")
        raise CLIError(
            f"non-numeric feature column(s) in {path}: {shown}; encode them as numbers "
            "first (e.g. one-hot with pandas.get_dummies) or drop them"
        )
    missing = X.isna().sum()
    if missing.any():
        col = missing.index[missing.to_numpy().nonzero()[0][0]]
        raise CLIError(f"feature column {col!r} in {path} has {int(missing[col])} missing "
                       "values; impute or drop them first")


def _check_out(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"output directory does not exist: {parent}")


@contextmanager
def _atomic_path(path: str) -> Iterator[str]:
    """A temporary path next to ``path``, renamed to it only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".skdvl-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- valuers
def _is_regression(y: Any) -> bool:
    from sklearn.utils.multiclass import type_of_target

    return type_of_target(np.asarray(y)) == "continuous"


def _model(regression: bool) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge() if regression else LogisticRegression())


def make_valuer(method: str, *, regression: bool, args: Any, estimator: Any = None) -> Any:
    """The valuer for ``method`` with the command's settings.

    ``estimator`` is the model of utility-based methods; None means a standardised
    logistic regression (ridge for a continuous target).
    """
    from skdvl import (
        BanzhafValuer,
        BetaShapleyValuer,
        DataOOBValuer,
        KNNShapley,
        LOOValuer,
        ShapleyValuer,
    )

    verbose = 0 if args.quiet else 1
    if method == "oob":
        return DataOOBValuer(n_estimators=args.n_estimators, n_jobs=args.n_jobs,
                             random_state=args.random_state)
    if method == "knn":
        return KNNShapley(n_neighbors=args.n_neighbors, n_jobs=args.n_jobs, verbose=verbose)
    model = _model(regression) if estimator is None else estimator
    common: dict[str, Any] = dict(estimator=model, n_jobs=args.n_jobs, verbose=verbose)
    if method == "loo":
        return LOOValuer(**common)
    budget = dict(max_updates=args.max_updates, random_state=args.random_state)
    if method == "shapley":
        return ShapleyValuer(**common, **budget, truncation=0.01)
    cls = {"banzhaf": BanzhafValuer, "beta": BetaShapleyValuer}[method]
    return cls(**common, **budget)


def _default_method() -> str:
    return "knn"


# ----------------------------------------------------------------------------- commands
def _load(args: Any) -> tuple[Any, Any, Any, Any, Any]:
    _check_out(args.out)
    frame, X, y = _read_table(args.data, args.target)
    X_val = y_val = None
    if getattr(args, "val", None):
        _, X_val, y_val = _read_table(args.val, args.target, what="VAL")
        if list(X_val.columns) != list(X.columns):
            raise CLIError(f"{args.val} must have the same feature columns as {args.data}")
    return frame, X, y, X_val, y_val


def _fit_values(args: Any, X: Any, y: Any, X_val: Any, y_val: Any) -> tuple[Any, str, float]:
    method = args.method or _default_method()
    valuer = make_valuer(method, regression=_is_regression(y), args=args)
    _note(args, f"valuing {len(y)} rows with {method} ...")
    t0 = time.perf_counter()
    if X_val is None:
        valuer.fit(X, y)
    else:
        valuer.fit(X, y, X_val=X_val, y_val=y_val)
    return valuer, method, time.perf_counter() - t0


def _values_frame(valuer: Any) -> Any:
    import pandas as pd

    values = np.asarray(valuer.values_, dtype=np.float64)
    stderr = np.asarray(getattr(valuer, "stderr_", np.full_like(values, np.nan)))
    return pd.DataFrame({"value": values, "stderr": stderr},
                        index=pd.RangeIndex(len(values), name="row"))


def cmd_value(args: Any) -> int:
    """``skdvl value``: write one value per row of DATA."""
    _, X, y, X_val, y_val = _load(args)
    valuer, method, seconds = _fit_values(args, X, y, X_val, y_val)
    frame = _values_frame(valuer)
    with _atomic_path(args.out) as tmp:
        frame.to_csv(tmp)
    print(f"wrote {len(frame)} {method} values to {args.out} ({seconds:.1f} s)")
    return 0


def cmd_clean(args: Any) -> int:
    """``skdvl clean``: write DATA without its lowest-valued rows."""
    from skdvl.cleaning import _rows_to_keep

    if args.values_out:
        _check_out(args.values_out)
    frame, X, y, X_val, y_val = _load(args)
    valuer, method, seconds = _fit_values(args, X, y, X_val, y_val)
    values = np.asarray(valuer.values_, dtype=np.float64)
    kept = _rows_to_keep(values, args.fraction, args.threshold)
    if kept.size == 0:
        raise CLIError(f"--threshold {args.threshold} would drop all {len(y)} rows")
    with _atomic_path(args.out) as tmp:
        frame.iloc[kept].to_csv(tmp, index=False)
        if args.values_out:
            with _atomic_path(args.values_out) as tmp_values:
                _values_frame(valuer).to_csv(tmp_values)
    rule = (f"valued below {args.threshold}" if args.threshold is not None
            else f"with the lowest {method} values")
    print(f"kept {kept.size} of {len(y)} rows (dropped {len(y) - kept.size} {rule}) "
          f"-> {args.out} ({seconds:.1f} s)")
    return 0


def cmd_demo(args: Any) -> int:
    """``skdvl demo``: find flipped labels in breast_cancer, clean, compare methods."""
    if args.plot:
        _check_out(args.plot)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise CLIError(f"--methods must list some of {', '.join(METHODS)}. Got {args.methods!r}")
    data = _demo_data(args.noise, args.random_state)
    _note(args, f"breast_cancer: {len(data['y_train'])} training rows, "
                f"{int(data['flipped'].sum())} labels flipped; validation "
                f"{len(data['y_val'])}, test {len(data['y_test'])} rows")
    before = _demo_accuracy(data, np.arange(len(data["y_train"])))
    rows: list[tuple] = []
    curves: dict[str, np.ndarray] = {}
    for method in methods:
        # the demo's data is already standardised: a bare model halves each fit
        valuer = make_valuer(method, regression=False, args=args, estimator=_demo_model())
        _note(args, f"valuing with {method} ...")
        seconds, values = _demo_value(valuer, method, data)
        kept = _rows_to_keep_(values, 0.1)
        rows.append((method, seconds, _auroc_(values, data["flipped"]),
                     _demo_accuracy(data, kept), ""))
        curves[method] = values
    print(_demo_table(rows, before))
    if args.plot and curves:
        _note(args, "removal curves ...")
        _demo_plot(args.plot, data, curves, args.random_state)
        print(f"wrote removal curves to {args.plot}")
    return 0


def _rows_to_keep_(values: np.ndarray, fraction: float) -> np.ndarray:
    from skdvl.cleaning import _rows_to_keep

    return _rows_to_keep(np.asarray(values, dtype=np.float64), fraction, None)


def _auroc_(values: np.ndarray, flipped: np.ndarray) -> float:
    from skdvl.evaluation import noisy_auroc

    return noisy_auroc(values, flipped)


def _demo_data(noise: float, seed: int) -> dict[str, Any]:
    """breast_cancer split 60/15/25 (train/validation/test), scaled, train labels flipped."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdvl.datasets import flip_labels

    X, y = load_breast_cancer(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=seed)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    y_noisy, flipped = flip_labels(y_train, noise, random_state=seed)
    return dict(X_train=scaler.transform(X_train), y_train=y_noisy, flipped=flipped,
                X_val=scaler.transform(X_val), y_val=y_val,
                X_test=scaler.transform(X_test), y_test=y_test)


def _demo_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _demo_accuracy(data: dict, kept: np.ndarray) -> float:
    model = _demo_model().fit(data["X_train"][kept], data["y_train"][kept])
    return float(model.score(data["X_test"], data["y_test"]))


def _demo_value(valuer: Any, method: str, data: dict) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    if method == "oob":
        valuer.fit(data["X_train"], data["y_train"])
    else:
        valuer.fit(data["X_train"], data["y_train"], X_val=data["X_val"], y_val=data["y_val"])
    return time.perf_counter() - t0, np.asarray(valuer.values_, dtype=np.float64)


def _demo_table(rows: list, before: float) -> str:
    head = (f"{'method':<9}{'seconds':>9}{'AUROC flipped':>15}{'test acc':>10}"
            f"{'after cleaning 10%':>20}")
    lines = [head, "-" * len(head)]
    for method, seconds, auroc, after, note in rows:
        if seconds is None:
            lines.append(f"{method:<9}  ({note})")
            continue
        lines.append(f"{method:<9}{seconds:>9.2f}{auroc:>15.3f}{before:>10.3f}{after:>20.3f}")
    return "\n".join(lines)


def _demo_plot(path: str, data: dict, curves: dict, seed: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed; no plot (pip install 'skdvl[plot]')",
                      stacklevel=2)
        return
    from skdvl.evaluation import removal_curve
    from skdvl.plotting import plot_removal_curves

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    kw = dict(X_test=data["X_test"], y_test=data["y_test"],
              fractions=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3], random_state=seed)
    for i, (method, values) in enumerate(curves.items()):
        strategies = ["lowest", "random"] if i == len(curves) - 1 else ["lowest"]
        curve = removal_curve(_demo_model(), data["X_train"], data["y_train"], values,
                              strategies=strategies, **kw)
        plot_removal_curves(curve, ax=ax, label=method, ylabel="test accuracy")
    ax.set_title("breast_cancer, 10% flipped labels: remove lowest-valued rows first")
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


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
"""

_METHOD_HELP = """valuation method: knn (exact KNN-Shapley, fast, the default), oob
(Data-OOB: out-of-bag scores of bagged trees),
shapley (truncated Monte Carlo Shapley of a logistic/ridge model, slow), banzhaf (MSR
Banzhaf), beta (Beta(16,1)-Shapley), loo (leave-one-out)"""


def _add_data_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("data", metavar="DATA.csv", help="CSV with a header row; every "
                   "column but the target is a numeric feature")
    p.add_argument("--target", required=True, metavar="COL", help="name of the target column")
    p.add_argument("--out", required=True, metavar="PATH", help=out_help)
    p.add_argument("--method", choices=METHODS, default=None, help=_METHOD_HELP)
    p.add_argument("--val", metavar="VAL.csv", help="validation rows, same columns as "
                   "DATA (knn/shapley/banzhaf/beta/loo; default: leave-self-out for knn, "
                   "5-fold cross-valuation for the others, oob needs none)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-neighbors", type=_positive_int, default=5, metavar="K",
                   help="neighbours for knn (default: 5)")
    p.add_argument("--n-estimators", type=_positive_int, default=100, metavar="B",
                   help="bagged trees for oob (default: 100)")
    p.add_argument("--max-updates", type=_positive_int, default=50, metavar="N",
                   help="Monte Carlo budget for shapley/banzhaf/beta (default: 50)")
    p.add_argument("--n-jobs", type=int, default=None, metavar="J",
                   help="parallel jobs (default: 1; -1 for all cores)")
    p.add_argument("--random-state", type=int, default=0, metavar="SEED",
                   help="seed; same seed, same values (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or notes on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The ``skdvl`` argument parser."""
    parser = _Parser(prog="skdvl", description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from skdvl import __version__

    parser.add_argument("--version", action="version", version=f"skdvl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser("demo", help="value breast_cancer with 10%% flipped labels, "
                          "compare methods, plot removal curves",
                          description=cmd_demo.__doc__)
    demo.add_argument("--plot", default="skdvl-demo-removal.png", metavar="PNG",
                      help="removal-curve figure (default: %(default)s; '' to skip)")
    demo.add_argument("--methods", default="knn,oob,shapley", metavar="LIST",
                      help="comma-separated methods (default: %(default)s)")
    demo.add_argument("--noise", type=_fraction, default=0.1, help="share of training "
                      "labels to flip (default: 0.1)")
    _add_common(demo)
    demo.set_defaults(func=cmd_demo, max_updates=10)
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
    how.add_argument("--threshold", type=float, default=None,
                     help="drop the rows valued below this instead")
    clean.add_argument("--values-out", metavar="PATH", help="also write the values CSV")
    clean.set_defaults(func=cmd_clean)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int,
                  file: Any = None, line: Any = None) -> None:
    print(f"skdvl: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skdvl`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("SKDVL_DEBUG", "") not in ("", "0")
    previous: Callable = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("skdvl: interrupted", file=sys.stderr)
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
        warnings.showwarning = previous
