"""A separate virtualenv with shapiq 1.8, and a helper to run scripts inside it.

shapiq 1.8 requires Python >= 3.12 while skdvl's venv runs Python 3.11, so, as for pyDVL
(``benchmarks/pydvl_env.py``), the shapiq half of a comparison runs in a subprocess,
inside ``benchmarks/.shapiq-venv`` (git-ignored), built from a Python 3.12+ interpreter:
``$SHAPIQ_PYTHON`` if set, else the first of ``python3.12``, ``python3.13`` on ``PATH``
or under ``$PYENV_ROOT/versions`` (``~/.pyenv``). shapiq 1.8 does not need torch.

Create or check the environment from the command line (idempotent; ``--force`` rebuilds)::

    python benchmarks/shapiq_env.py           # prints the path of the venv's python

Use it from a benchmark::

    from shapiq_env import run_shapiq          # benchmarks/ on sys.path
    res = run_shapiq("benchmarks/shapiq_side/estimators.py", {"games": "..."})
    res["result"], res["wall_s"], res["peak_rss_mb"]

The side script follows the protocol of :func:`pydvl_env.run_pydvl` (JSON on stdin with
an ``out_dir`` added, one JSON object on the last stdout line, ``.npy``/``.npz`` paths in
``out_dir`` loaded), which runs it: only the interpreter differs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pydvl_env
from pydvl_env import _pip

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".shapiq-venv"
PACKAGES = ["shapiq==1.8.0", "numpy", "scikit-learn", "threadpoolctl",
            "xgboost"]  # shapiq's default proxy model (RegressionMSR, ProxySHAP)
_STAMP = VENV_DIR / ".skdvl-bench-stamp"
_CHECK = "import shapiq, shapiq.approximator, numpy; print(shapiq.__version__)"

__all__ = ["VENV_DIR", "base_python", "ensure_shapiq_venv", "run_shapiq", "shapiq_python"]


def shapiq_python() -> Path:
    """Path of the python executable inside the shapiq venv (it may not exist yet)."""
    return VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _runs_312(python: str) -> bool:
    """Whether ``python`` starts and is Python >= 3.12 (a pyenv shim may do neither)."""
    code = "import sys; sys.exit(sys.version_info < (3, 12))"
    try:
        return subprocess.run([python, "-c", code], capture_output=True,
                              check=False).returncode == 0
    except OSError:
        return False


def base_python() -> str:
    """A Python >= 3.12 interpreter to build the venv from (see the module docstring)."""
    if os.environ.get("SHAPIQ_PYTHON"):
        return os.environ["SHAPIQ_PYTHON"]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(name) for name in ("python3.12", "python3.13")]
    for minor in ("3.12", "3.13"):
        candidates += sorted(glob.glob(os.path.join(root, "versions", f"{minor}.*", "bin",
                                                    "python")))
    for found in candidates:
        if found and _runs_312(found):
            return found
    raise RuntimeError(
        "shapiq 1.8 needs Python >= 3.12 and none was found (python3.12/python3.13 on PATH "
        "or under ~/.pyenv/versions); set SHAPIQ_PYTHON to one.")


def _spec_hash(base: str) -> str:
    return hashlib.sha256("\n".join([base, *PACKAGES]).encode()).hexdigest()[:16]


def _imports(py: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-c", _CHECK], capture_output=True, text=True,
                          check=False)


_checked: set[Path] = set()  # venvs whose imports were checked by this process


def ensure_shapiq_venv(force: bool = False) -> Path:
    """Create ``benchmarks/.shapiq-venv`` with shapiq 1.8 unless it is already there.

    Idempotent: a stamp file records the base interpreter and the package list; when it
    matches and ``shapiq.approximator`` imports (checked once per process), nothing is
    installed. Returns the path of the venv's python.
    """
    py, base = shapiq_python(), base_python()
    fresh = py.exists() and _STAMP.exists() and _STAMP.read_text().strip() == _spec_hash(base)
    if not force and fresh:
        if py in _checked or _imports(py).returncode == 0:
            _checked.add(py)
            return py
    cmd = [base, "-m", "venv", *(["--clear"] if force or py.exists() else []), str(VENV_DIR)]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    _pip(py, *PACKAGES)
    out = _imports(py)
    if out.returncode != 0:
        raise RuntimeError(f"shapiq venv at {VENV_DIR} does not import shapiq:\n{out.stderr}")
    _STAMP.write_text(_spec_hash(base) + "\n")
    _checked.add(py)
    return py


def run_shapiq(script_path: str | os.PathLike, args: dict | None = None,
               timeout: float = 600.0, env: dict | None = None) -> dict:
    """Run ``script_path`` with the shapiq venv's python; see :func:`pydvl_env.run_pydvl`.

    Same arguments, result and errors as ``run_pydvl``, which does the work: only the
    venv it resolves is swapped for this one.
    """
    py = ensure_shapiq_venv()
    with mock.patch.object(pydvl_env, "ensure_pydvl_venv", lambda: py):
        return pydvl_env.run_pydvl(script_path, args, timeout=timeout, env=env)


if __name__ == "__main__":
    print(ensure_shapiq_venv(force="--force" in sys.argv[1:]))
