"""The ``skdvl`` command (``python -m skdvl`` too): the parser, value, clean and main.

Errors in the input (a missing file, an unknown column, non-numeric features, empty
data, an option out of its range, an output path that exists) end the command with
one line on stderr and a non-zero exit status: 2 for bad command-line usage, 1 for
bad data or a failed computation, 130 for Ctrl-C. Output paths are checked before
any work; outputs are written to a temporary file next to the target and renamed
into place only when complete, so a failed or interrupted run never leaves a
partial file. Set ``SKDVL_DEBUG=1`` to see tracebacks.

The target's task (``--task``) follows :func:`skdvl.base.resolve_task`, and the
command chooses every model and score from it itself, and the method too unless
``--method`` names one (``DEFAULT_METHODS``: knn for classification, oob for regression,
chosen by ``benchmarks/bench_cli_default.py``). Features are standardised on DATA's rows
for every method but oob (``--no-scale`` to turn it off).

The parts: :mod:`skdvl.cli._io` (option types, tables, output paths, Ctrl-C),
:mod:`skdvl.cli._options` (methods, their options, :func:`make_valuer`) and
:mod:`skdvl.cli._demo` (``skdvl demo``); none of them uses this module.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import skdvl
from skdvl.cli._demo import add_demo_parser
from skdvl.cli._demo import cmd_demo as cmd_demo
from skdvl.cli._io import (
    _SIGINT,
    CLIError,
    _atomic_path,
    _check_outs,
    _finite,
    _fraction,
    _handle_sigint,
    _list,
    _note,
    _one_line,
    _read_table,
)
from skdvl.cli._io import _demo_png as _demo_png
from skdvl.cli._options import _METHOD_OPTIONS, _add_data_args, make_valuer, resolve_method
from skdvl.cli._options import DEFAULT_METHODS as DEFAULT_METHODS
from skdvl.cli._options import METHODS as METHODS
from skdvl.cli._options import TASKS as TASKS

__all__ = ["main"]
# ``X as X`` above: importable from skdvl.cli as before the package split


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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
    """Value the rows; ``args.method`` is the method used from here on (``auto`` resolved)."""
    task = _resolve_task(args, y, y_val)
    args.method, why = resolve_method(args.method, task)
    _note(args, f"method: {args.method} ({why})")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``skdvl`` argument parser."""
    parser = _Parser(prog="skdvl", description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
