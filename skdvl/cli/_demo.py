"""``skdvl demo``: find flipped labels, clean, and check that cleaning beats chance.

It uses the command's helpers (output checks, Ctrl-C in :mod:`skdvl.cli._io`; the
valuers of :mod:`skdvl.cli._options`), nothing of the package's ``__init__``, whose
``build_parser`` adds the ``demo`` sub-command from here.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from skdvl.cli._io import _SIGINT, CLIError, _atomic_path, _check_outs, _note, _number
from skdvl.cli._options import _OVERWRITE_HELP, METHODS, _add_common, make_valuer

__all__ = ["add_demo_parser", "cmd_demo"]

#: the demo's data: rows of make_classification, and their split train/validation/test
_ROWS, _TRAIN, _VAL = 3000, 1050, 450
#: random subsets of the same size whose test accuracy is averaged, per split
_RANDOM_DRAWS = 5


def _noise(text: str) -> float:
    value = _number(text, float, "a number in (0, 0.5]")
    if not 0 < value <= 0.5:
        raise argparse.ArgumentTypeError(
            f"must be in (0, 0.5] (the share of labels to flip). Got {value}.")
    return float(value)


def _splits(text: str) -> int:
    value = _number(text, int, "an integer >= 2")
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be >= 2 (a spread needs two splits). Got {value}.")
    return int(value)


def add_demo_parser(sub: Any) -> None:
    """Add the ``demo`` sub-command to the sub-parsers ``sub`` of ``skdvl``."""
    demo = sub.add_parser("demo", help="flip labels of a generated dataset, value the rows, "
                          "check that dropping the lowest-valued rows beats dropping "
                          "random ones", description=cmd_demo.__doc__)
    demo.add_argument("--plot", default="skdvl-demo-removal.png", metavar="PNG",
                      help="removal-curve figure of the first split (default: "
                      "%(default)s; '' to skip); a figure an earlier demo wrote is "
                      "replaced, another file only with --overwrite")
    demo.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    demo.add_argument("--methods", default="knn,oob,shapley", metavar="LIST",
                      help="comma-separated methods (default: %(default)s)")
    demo.add_argument("--noise", type=_noise, default=0.2, help="share of training "
                      "labels to flip, in (0, 0.5]; as many rows are dropped (default: 0.2)")
    demo.add_argument("--splits", type=_splits, default=5, metavar="K",
                      help="random train/validation/test splits averaged, >= 2 "
                      "(default: 5)")
    _add_common(demo)
    demo.set_defaults(func=cmd_demo, max_updates=20)


def cmd_demo(args: Any) -> int:
    """``skdvl demo``: value the rows of a noisy dataset; does cleaning beat chance?

    3,000 rows of ``make_classification`` (20 features, seeded; nothing is
    downloaded) are split ``--splits`` times into 1,050 training, 450 validation
    and 1,500 test rows, and ``--noise`` of the training labels are flipped. For
    each method and split: the AUROC of the values at finding the flipped rows,
    and the test accuracy of a logistic regression trained without the
    lowest-valued rows, against the same number of rows dropped at random. The
    table gives means and standard deviations over the splits; the verdict says
    whether a method's cleaning beat random dropping by more than twice the
    standard error of the difference.
    """
    args.plot = args.plot or None
    _check_outs(args, "--plot")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) < len(methods):
        raise CLIError(f"--methods must list some of {', '.join(METHODS)}, each once. "
                       f"Got {args.methods!r}")
    seeds = np.random.SeedSequence(args.random_state).generate_state(args.splits)
    drop = round(args.noise * _TRAIN)
    _note(args, f"make_classification: {_ROWS:,} rows, {args.splits} splits into "
                f"{_TRAIN:,} training / {_VAL} validation / {_ROWS - _TRAIN - _VAL:,} test "
                f"rows; {drop} training labels flipped and {drop} rows dropped per split")
    stats: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in methods}
    before, curves = [], {}
    for k, seed in enumerate(seeds):
        data = _demo_data(args.noise, int(seed))
        before.append(_demo_accuracy(data, np.arange(_TRAIN)))
        random_acc = _random_accuracy(data, _TRAIN - drop, int(seed))
        for method in methods:
            # the demo's data is already standardised: a bare model halves each fit
            valuer = make_valuer(method, task="classification", args=args,
                                 estimator=_demo_model())
            _note(args, f"split {k + 1}/{args.splits}: valuing with {method} ...")
            seconds, values = _demo_value(valuer, method, data)
            _SIGINT.check()
            stats[method].append(_scores(data, values, drop, seconds, random_acc))
            if k == 0:
                curves[method] = values
        if k == 0:
            first = data
    print(_demo_report(stats, np.asarray(before), args, drop))
    if args.plot and curves:
        _note(args, "removal curves ...")
        _demo_plot(args.plot, first, curves, args.random_state, args.noise)
        print(f"wrote removal curves of the first split to {args.plot}")
    return 0


def _demo_data(noise: float, seed: int) -> dict[str, Any]:
    """One split of the demo's rows (standardised on the training rows), labels flipped."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from skdvl.datasets import flip_labels

    X, y = make_classification(n_samples=_ROWS, n_features=20, n_informative=6,
                               n_redundant=4, class_sep=1.5, flip_y=0.0, random_state=0)
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=_TRAIN, stratify=y, random_state=seed % 2**31)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, train_size=_VAL, stratify=y_rest, random_state=seed % 2**31)
    scaler = StandardScaler().fit(X_train)
    y_noisy, flipped = flip_labels(y_train, noise, random_state=seed % 2**31)
    return dict(X_train=scaler.transform(X_train), y_train=y_noisy, flipped=flipped,
                X_val=scaler.transform(X_val), y_val=y_val,
                X_test=scaler.transform(X_test), y_test=y_test)


def _demo_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _demo_accuracy(data: dict, kept: np.ndarray) -> float:
    model = _demo_model().fit(data["X_train"][kept], data["y_train"][kept])
    return float(model.score(data["X_test"], data["y_test"]))


def _random_accuracy(data: dict, keep: int, seed: int) -> float:
    """Test accuracy without random rows (as many as the cleaning drops), averaged."""
    rng = np.random.default_rng(seed)
    n = data["y_train"].shape[0]
    return float(np.mean([_demo_accuracy(data, np.sort(rng.choice(n, keep, replace=False)))
                          for _ in range(_RANDOM_DRAWS)]))


def _demo_value(valuer: Any, method: str, data: dict) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    if method == "oob":
        valuer.fit(data["X_train"], data["y_train"])
    else:
        valuer.fit(data["X_train"], data["y_train"], X_val=data["X_val"], y_val=data["y_val"])
    return time.perf_counter() - t0, np.asarray(valuer.values_, dtype=np.float64)


def _scores(data: dict, values: np.ndarray, drop: int, seconds: float,
            random_acc: float) -> tuple[float, float, float, float]:
    """(seconds, AUROC of -values for the flipped rows, accuracy without the lowest, random)."""
    from skdvl.cleaning import rows_to_keep
    from skdvl.evaluation import noisy_auroc

    kept = rows_to_keep(values, fraction=drop / values.shape[0])
    return (seconds, float(noisy_auroc(values, data["flipped"])),
            _demo_accuracy(data, kept), random_acc)


def _pm(x: np.ndarray, signed: bool = False) -> str:
    return f"{x.mean():{'+' if signed else ''}.3f} ± {x.std(ddof=1):.3f}"


def _verdict(diff: np.ndarray) -> str:
    """Whether dropping the lowest-valued rows beat dropping random ones: by more than
    twice the standard error of the mean difference over the splits."""
    se = diff.std(ddof=1) / np.sqrt(diff.shape[0])
    if diff.mean() > 2 * se:
        return "helps"
    if diff.mean() < -2 * se:
        return "hurts"
    return "no clear effect"


def _demo_report(stats: dict, before: np.ndarray, args: Any, drop: int) -> str:
    k, pct = before.shape[0], f"{round(100 * args.noise)}%"
    cols = (f"{'method':<9}{'seconds':>8}  {'AUROC flipped':<15}"
            f"{'drop lowest ' + pct:<17}{'drop random ' + pct:<17}"
            f"{'lowest - random':<17}verdict")
    lines = [f"test accuracy (mean ± sd over {k} splits; {drop} of {_TRAIN:,} training "
             f"labels flipped, {_ROWS - _TRAIN - _VAL:,} test rows): "
             f"{_pm(before)} before cleaning", "", cols, "-" * len(cols)]
    notes = []
    for method, rows in stats.items():
        r = np.asarray(rows)
        diff = r[:, 2] - r[:, 3]
        verdict = _verdict(diff)
        lines.append(f"{method:<9}{r[:, 0].mean():>8.2f}  {_pm(r[:, 1]):<15}"
                     f"{_pm(r[:, 2]):<17}{_pm(r[:, 3]):<17}{_pm(diff, True):<17}{verdict}")
        if verdict != "helps":
            notes.append(f"{method}: dropping its lowest-valued rows did not beat dropping "
                         f"random rows on this data ({verdict}).")
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def _demo_plot(path: str, data: dict, curves: dict, seed: int, noise: float) -> None:
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
    ax.set_title(f"{round(100 * noise)}% flipped labels (first split): remove "
                 "lowest-valued rows first")
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png",
                    metadata={"Software": "skdvl demo"})
    plt.close(fig)
