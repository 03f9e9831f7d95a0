"""Input and output of the ``skdvl`` command: option types, tables, output paths, Ctrl-C.

The pieces every sub-command uses: the argparse types that check an option's domain,
reading a CSV and checking its features, refusing an output path before any work,
writing outputs atomically, the SIGINT handler, and the one-line notes on stderr.
Nothing here imports the rest of :mod:`skdvl.cli`.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

_PNG_MARK = b"tEXtSoftware\x00skdvl demo"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _one_line(exc: BaseException | Warning | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _note(args: Any, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


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
