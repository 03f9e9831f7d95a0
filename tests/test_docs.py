"""The API reference (doc/api.rst) lists every public name.

Public modules are found by walking the ``skdvl`` package (every module whose dotted
name has no component starting with an underscore); a module's public names are its
``__all__``. A name is documented when ``doc/api.rst`` lists it in an ``autosummary``
table (under the current ``.. currentmodule::``) or an ``auto*`` directive, either under
the module that exports it or under any other public path to the same object (the
valuers are listed under ``skdvl``, which re-exports ``skdvl.valuation``'s). The test
reads the reference's source: it builds nothing and takes well under a second.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import skdvl

API = Path(__file__).resolve().parent.parent / "doc" / "api.rst"
# Optional dependencies: a module that cannot be imported without them is skipped.
OPTIONAL = {"torch", "skorch", "dask", "distributed", "zarr", "matplotlib", "imblearn"}


def public_modules() -> list[str]:
    names = ["skdvl"]
    for info in pkgutil.walk_packages(skdvl.__path__, "skdvl.", onerror=lambda name: None):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def documented_names(text: str) -> set[str]:
    """Fully qualified names that ``api.rst`` documents."""
    names: set[str] = set()
    current = None
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r"\.\. (?:py:)?currentmodule:: (\S+)", stripped)
        if m:
            current = None if m.group(1) == "None" else m.group(1)
            in_table = False
            continue
        m = re.match(r"\.\. auto(?:class|function|data|exception|attribute)::\s*(\S+)",
                     stripped)
        if m:
            target = m.group(1)
            names.add(target if current is None or "." in target
                      else f"{current}.{target}")
            in_table = False
            continue
        if stripped.startswith(".. autosummary::"):
            in_table = True
            continue
        if in_table:
            if not stripped or stripped.startswith(":"):
                continue
            if not line.startswith((" ", "\t")):
                in_table = False
                continue
            entry = stripped.split()[0].lstrip("~")
            names.add(entry if current is None else f"{current}.{entry}")
    return names


def resolve(qualified: str):
    module, _, attr = qualified.rpartition(".")
    while module:
        try:
            obj = importlib.import_module(module)
        except ImportError:
            module, _, head = module.rpartition(".")
            attr = f"{head}.{attr}"
            continue
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    raise ImportError(qualified)


def import_or_skip(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing in OPTIONAL:
            pytest.skip(f"{name} needs {missing}")
        raise


@pytest.fixture(scope="module")
def reference():
    names = documented_names(API.read_text(encoding="utf-8"))
    objects = {}
    for qualified in names:
        try:
            objects[qualified] = resolve(qualified)
        except ImportError:
            continue  # an optional dependency is missing
        except AttributeError:
            pytest.fail(f"doc/api.rst lists {qualified}, which does not exist")
    return names, objects


def test_public_modules_found():
    mods = public_modules()
    for expected in ["skdvl", "skdvl.valuation", "skdvl.sampling", "skdvl.stopping",
                     "skdvl.utility", "skdvl.utils.estimator_checks"]:
        assert expected in mods


def test_reference_parser():
    text = """
.. currentmodule:: skdvl.a

.. autosummary::
   :toctree: generated/

   One
   ~Two

.. currentmodule:: skdvl.b

.. autofunction:: three

Plain text
"""
    assert documented_names(text) == {"skdvl.a.One", "skdvl.a.Two", "skdvl.b.three"}


@pytest.mark.parametrize("module_name", public_modules())
def test_every_public_name_is_in_the_api_reference(module_name, reference):
    names, objects = reference
    module = import_or_skip(module_name)
    public = getattr(module, "__all__", None)
    if public is None:
        public = [n for n, obj in vars(module).items() if not n.startswith("_")
                  and getattr(obj, "__module__", None) == module_name]
    ids = {id(obj) for obj in objects.values()}
    missing = []
    for name in public:
        obj = getattr(module, name)
        if f"{module_name}.{name}" in names:
            continue
        # the same object under another public path (skdvl.ShapleyValuer for
        # skdvl.valuation.ShapleyValuer); constants must be listed by their own name
        if id(obj) in ids and not isinstance(obj, (str, int, float, tuple, frozenset)):
            continue
        missing.append(f"{module_name}.{name}")
    assert not missing, (
        f"public names missing from doc/api.rst: {', '.join(missing)}; add each to an "
        "autosummary table there (under the right '.. currentmodule::')")
