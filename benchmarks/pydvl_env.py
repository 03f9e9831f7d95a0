"""A separate virtualenv with pyDVL 0.10, and a helper to run scripts inside it.

pyDVL 0.10 pins ``numpy<2`` while skdvl runs on numpy 2, so the two libraries cannot share
one environment. Benchmarks therefore run the pyDVL half of a comparison in a subprocess,
inside ``benchmarks/.pydvl-venv`` (git-ignored), and the skdvl half in the caller's process.

Create or check the environment from the command line (idempotent; ``--force`` rebuilds)::

    python benchmarks/pydvl_env.py            # prints the path of the venv's python

Use it from a benchmark::

    from pydvl_env import run_pydvl           # benchmarks/ on sys.path
    res = run_pydvl("benchmarks/pydvl_side/semivalues.py", {"n": 1000}, timeout=600)
    res["result"]        # the JSON object the script printed (arrays already loaded)
    res["wall_s"], res["peak_rss_mb"]

Protocol for a script run by :func:`run_pydvl` (it runs with the venv's python):

* it reads its arguments as one JSON object from **stdin**: ``json.load(sys.stdin)``; the
  key ``"out_dir"`` is added: a fresh temporary directory for large outputs;
* it prints its result as one JSON object on the **last non-empty line of stdout** (print
  other things before it, or to stderr);
* large arrays: ``np.save(os.path.join(args["out_dir"], "values.npy"), arr)`` and put that
  path in the result; every string in the result that ends in ``.npy``/``.npz`` and lies in
  ``out_dir`` is replaced by the loaded array (``.npz``: a dict of arrays) before the
  directory is deleted.

Input data is best passed the same way in reverse: save an ``.npz`` and pass its path.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
VENV_DIR = BENCH_DIR / ".pydvl-venv"
#: torch is installed first, pinned, from its own command: an unpinned torch would pull
#: a multi-GB CUDA build. The constraint below keeps later installs from replacing it.
TORCH_SPEC = "torch==2.13.0"
#: ``[influence]`` brings dask, distributed and zarr (pyDVL's influence calculators).
PACKAGES = ["pydvl[influence]==0.10.0", "numpy<2", "scikit-learn", "threadpoolctl"]
_STAMP = VENV_DIR / ".skdvl-bench-stamp"
_CHECK = "import pydvl, pydvl.valuation, torch, numpy; print(pydvl.__version__)"

__all__ = ["VENV_DIR", "ensure_pydvl_venv", "pydvl_python", "run_pydvl"]


def pydvl_python() -> Path:
    """Path of the python executable inside the pyDVL venv (it may not exist yet)."""
    return VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _spec_hash() -> str:
    text = "\n".join([TORCH_SPEC, *PACKAGES, sys.version.split()[0]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pip(py: Path, *args: str) -> None:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


_checked: set[Path] = set()  # venvs whose imports were checked by this process


def ensure_pydvl_venv(force: bool = False) -> Path:
    """Create ``benchmarks/.pydvl-venv`` with pyDVL 0.10 unless it is already there.

    Idempotent: a stamp file records the package list; when it matches and ``pydvl``,
    ``pydvl.valuation`` and ``torch`` import (checked once per process: the check costs
    seconds), nothing is installed. Returns the path of the venv's python.
    """
    py = pydvl_python()
    fresh = py.exists() and _STAMP.exists() and _STAMP.read_text().strip() == _spec_hash()
    if not force and fresh:
        if py in _checked:
            return py
        ok = subprocess.run([str(py), "-c", _CHECK], capture_output=True, text=True,
                            check=False)
        if ok.returncode == 0:
            _checked.add(py)
            return py
    venv.EnvBuilder(with_pip=True, clear=force or not py.exists()).create(VENV_DIR)
    _pip(py, TORCH_SPEC)
    constraints = VENV_DIR / "constraints.txt"
    constraints.write_text(TORCH_SPEC + "\n")
    _pip(py, "-c", str(constraints), *PACKAGES)
    out = subprocess.run([str(py), "-c", _CHECK], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pyDVL venv at {VENV_DIR} does not import pydvl:\n{out.stderr}")
    _STAMP.write_text(_spec_hash() + "\n")
    _checked.add(py)
    return py


def _load_arrays(obj: Any, out_dir: str) -> Any:
    """Replace paths of .npy/.npz files written in ``out_dir`` by their contents."""
    if isinstance(obj, dict):
        return {k: _load_arrays(v, out_dir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_load_arrays(v, out_dir) for v in obj]
    if isinstance(obj, str) and obj.endswith((".npy", ".npz")):
        path = Path(obj)
        if path.is_file() and Path(out_dir).resolve() in path.resolve().parents:
            if obj.endswith(".npy"):
                return np.load(path, allow_pickle=False)
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    return obj


def _wait(pid: int, timeout: float) -> tuple[int, Any, bool]:
    """Reap ``pid`` with wait4 (so its rusage is its own), killing its group on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), usage, False
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return os.waitstatus_to_exitcode(status), usage, True
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def run_pydvl(
    script_path: str | os.PathLike,
    args: dict | None = None,
    timeout: float = 600.0,
    env: dict | None = None,
) -> dict:
    """Run ``script_path`` with the pyDVL venv's python and return its JSON result.

    Parameters
    ----------
    script_path : path of the script (see the module docstring for its protocol).
    args : JSON-serialisable dict, sent on stdin; ``out_dir`` is added to it.
    timeout : seconds of wall time before the whole process group is killed.
    env : extra environment variables for the child (e.g. ``{"OMP_NUM_THREADS": "1"}``).

    Returns
    -------
    dict with ``result`` (the parsed JSON, arrays loaded), ``wall_s`` (wall time of the
    child, interpreter start-up and imports included: time inside the script is best
    measured by the script itself), ``peak_rss_mb`` (peak resident memory of the child,
    from ``wait4``: the maximum over the child and the descendants it reaped, e.g. joblib
    workers it shut down; Linux reports it in KiB), ``returncode`` and ``stderr_tail``.

    Raises
    ------
    TimeoutError if the child ran past ``timeout``; RuntimeError if it failed or printed no
    JSON object on its last stdout line.
    """
    py = ensure_pydvl_venv()
    args = dict(args or {})
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    child_env.pop("PYTHONPATH", None)  # never let our venv's packages leak in
    child_env.pop("VIRTUAL_ENV", None)
    with tempfile.TemporaryDirectory(prefix="pydvl-run-") as tmp:
        args["out_dir"] = tmp
        in_path, out_path, err_path = (Path(tmp) / f for f in ("in.json", "out", "err"))
        in_path.write_text(json.dumps(args))
        with open(in_path) as fin, open(out_path, "w") as fout, open(err_path, "w") as ferr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [str(py), str(script_path)], stdin=fin, stdout=fout, stderr=ferr,
                env=child_env, start_new_session=True,
            )
            rc, usage, timed_out = _wait(proc.pid, timeout)
            proc.returncode = rc  # already reaped; keep Popen from waiting again
            wall = time.perf_counter() - t0
        stdout, stderr = out_path.read_text(), err_path.read_text()
        tail = stderr[-4000:]
        if timed_out:
            raise TimeoutError(f"{script_path} ran past timeout={timeout}s.\n{tail}")
        if rc != 0:
            raise RuntimeError(f"{script_path} exited with {rc}.\nstderr:\n{tail}")
        lines = [ln for ln in stdout.splitlines() if ln.strip()]
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError) as exc:
            raise RuntimeError(
                f"{script_path} printed no JSON object on its last stdout line; "
                f"stdout ends with {stdout[-500:]!r}"
            ) from exc
        result = _load_arrays(result, tmp)
    scale = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux, B on macOS
    return {
        "result": result,
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss * scale / 2**20,
        "returncode": rc,
        "stderr_tail": tail,
    }


if __name__ == "__main__":
    print(ensure_pydvl_venv(force="--force" in sys.argv[1:]))
