"""Root pytest configuration: skip doctests of optional-dependency modules when absent."""

import importlib.util

collect_ignore: list[str] = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["skdvl/influence"]
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore += ["skdvl/plotting.py"]
