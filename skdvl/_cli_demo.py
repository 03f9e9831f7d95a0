"""``skdvl demo``: find flipped labels in breast_cancer, clean, compare methods.

Split from :mod:`skdvl.cli`, whose helpers (output checks, Ctrl-C, valuers) it uses;
``skdvl.cli.build_parser`` adds the ``demo`` sub-command from here.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from skdvl.cli import (
    _OVERWRITE_HELP,
    _SIGINT,
    METHODS,
    CLIError,
    _add_common,
    _atomic_path,
    _check_outs,
    _note,
    _number,
    make_valuer,
)

__all__ = ["add_demo_parser", "cmd_demo"]


def _noise(text: str) -> float:
    value = _number(text, float, "a number in (0, 0.5]")
    if not 0 < value <= 0.5:
        raise argparse.ArgumentTypeError(
            f"must be in (0, 0.5] (the share of labels to flip). Got {value}.")
    return float(value)



def add_demo_parser(sub: Any) -> None:
    """Add the ``demo`` sub-command to the sub-parsers ``sub`` of ``skdvl``."""
    demo = sub.add_parser("demo", help="value breast_cancer with 10%% flipped labels, "
                          "compare methods, plot removal curves",
                          description=cmd_demo.__doc__)
    demo.add_argument("--plot", default="skdvl-demo-removal.png", metavar="PNG",
                      help="removal-curve figure (default: %(default)s; '' to skip); a "
                      "figure an earlier demo wrote is replaced, another file only with "
                      "--overwrite")
    demo.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    demo.add_argument("--methods", default="knn,oob,shapley", metavar="LIST",
                      help="comma-separated methods (default: %(default)s)")
    demo.add_argument("--noise", type=_noise, default=0.1, help="share of training "
                      "labels to flip, in (0, 0.5] (default: 0.1)")
    _add_common(demo)
    demo.set_defaults(func=cmd_demo, max_updates=10)


def cmd_demo(args: Any) -> int:
    """``skdvl demo``: find flipped labels in breast_cancer, clean, compare methods."""
    from skdvl.cleaning import rows_to_keep
    from skdvl.evaluation import noisy_auroc

    args.plot = args.plot or None
    _check_outs(args, "--plot")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) < len(methods):
        raise CLIError(f"--methods must list some of {', '.join(METHODS)}, each once. "
                       f"Got {args.methods!r}")
    data = _demo_data(args.noise, args.random_state)
    _note(args, f"breast_cancer: {len(data['y_train'])} training rows, "
                f"{int(data['flipped'].sum())} labels flipped; validation "
                f"{len(data['y_val'])}, test {len(data['y_test'])} rows")
    before = _demo_accuracy(data, np.arange(len(data["y_train"])))
    rows: list[tuple[str, float, float, float]] = []
    curves: dict[str, np.ndarray] = {}
    for method in methods:
        # the demo's data is already standardised: a bare model halves each fit
        valuer = make_valuer(method, task="classification", args=args,
                             estimator=_demo_model())
        _note(args, f"valuing with {method} ...")
        seconds, values = _demo_value(valuer, method, data)
        _SIGINT.check()
        kept = rows_to_keep(values, fraction=0.1)
        rows.append((method, seconds, noisy_auroc(values, data["flipped"]),
                     _demo_accuracy(data, kept)))
        curves[method] = values
    print(_demo_table(rows, before))
    if args.plot and curves:
        _note(args, "removal curves ...")
        _demo_plot(args.plot, data, curves, args.random_state)
        print(f"wrote removal curves to {args.plot}")
    return 0


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


def _demo_table(rows: list[tuple[str, float, float, float]], before: float) -> str:
    head = (f"{'method':<9}{'seconds':>9}{'AUROC flipped':>15}{'test acc':>10}"
            f"{'after cleaning 10%':>20}")
    lines = [head, "-" * len(head)]
    for method, seconds, auroc, after in rows:
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
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png",
                    metadata={"Software": "skdvl demo"})
    plt.close(fig)
