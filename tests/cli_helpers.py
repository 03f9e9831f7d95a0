"""Running the ``skdvl`` command in a subprocess, for the CLI tests."""

import os
import subprocess
import sys


def run(*args, cwd=None, timeout=300):
    """``python -m skdvl ARGS``, without debug tracebacks; the completed process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    env.pop("SKDVL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "skdvl", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False,
    )


def assert_one_line(proc, code, match):
    """The command exited ``code`` with one line on stderr containing ``match``."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert match in lines[0], lines[0]
