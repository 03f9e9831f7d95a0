"""Sphinx configuration of the skdvl documentation.

Build: ``sphinx-build -W -b html doc doc/_build/html`` (``pip install -e ".[all,doc]"``).

Intersphinx needs the network: the inventories of numpy, scipy, scikit-learn, torch,
dask and zarr are fetched from their sites. ``SKDVL_DOC_INTERSPHINX`` says what to do:

- ``auto`` (the default): each inventory is downloaded first (3 s timeout, in
  parallel) and Sphinx reads the local copy; those that cannot be reached are left out
  of ``intersphinx_mapping`` with a line on stdout, so an offline build (CI has no
  network but the package registries) passes ``-W`` and simply does not link them;
- ``off``: no intersphinx at all, no probe (the fastest offline build);
- ``on``: every inventory is used, and one that cannot be fetched is a warning (an error
  under ``-W``): use it to check the links on a machine with network.
"""

from __future__ import annotations

import os
import sys
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import skdvl

HERE = Path(__file__).resolve().parent

project = "skdvl"
author = "The skdvl developers"
copyright = "The skdvl developers, BSD-3-Clause"
release = skdvl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "auto_examples/*.md5", "sg_execution_times.rst"]
templates_path = ["_templates"]

# -- MyST: the guide pages are markdown --------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# -- autodoc / autosummary / numpydoc ------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"inherited-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
add_module_names = False

# -- intersphinx ---------------------------------------------------------------------
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "numpy": "https://numpy.org/doc/stable",
    "scipy": "https://docs.scipy.org/doc/scipy",
    "sklearn": "https://scikit-learn.org/stable",
    "torch": "https://pytorch.org/docs/stable",
    "dask": "https://docs.dask.org/en/stable",
    "distributed": "https://distributed.dask.org/en/stable",
    "zarr": "https://zarr.readthedocs.io/en/stable",
    "joblib": "https://joblib.readthedocs.io/en/stable",
    "pandas": "https://pandas.pydata.org/docs",
    "imblearn": "https://imbalanced-learn.org/stable",
    "matplotlib": "https://matplotlib.org/stable",
}


def _fetch(name: str, url: str, cache: Path) -> str | None:
    """Download one inventory (3 s timeout); its local path, or None when unreachable."""
    try:
        with urllib.request.urlopen(url + "/objects.inv", timeout=3) as response:
            data = response.read()
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return None
    path = cache / f"{name}.inv"
    path.write_bytes(data)
    return str(path)


def _intersphinx_mapping() -> dict[str, tuple[str, str | None]]:
    mode = os.environ.get("SKDVL_DOC_INTERSPHINX", "auto").lower()
    if mode == "off":
        print("intersphinx: off (SKDVL_DOC_INTERSPHINX=off)")
        return {}
    if mode == "on":
        return {name: (url, None) for name, url in _INVENTORIES.items()}
    # auto: fetch each inventory once, here, and hand Sphinx the local copy, so that a
    # network that fails between the probe and the build cannot turn into a warning.
    cache = HERE / "_build" / "intersphinx"
    cache.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(len(_INVENTORIES)) as pool:
        local = dict(zip(_INVENTORIES, pool.map(
            lambda item: _fetch(*item, cache), _INVENTORIES.items())))
    missing = sorted(name for name, path in local.items() if path is None)
    if missing:
        print(f"intersphinx: no network for {', '.join(missing)}: not linked "
              "(SKDVL_DOC_INTERSPHINX=on makes that an error)")
    return {name: (url, local[name]) for name, url in _INVENTORIES.items()
            if local[name] is not None}


intersphinx_mapping = _intersphinx_mapping()
intersphinx_timeout = 10

# -- sphinx-gallery ------------------------------------------------------------------
# Every ``examples/plot_*.py`` is executed at build time; the two plain scripts
# (label_noise.py, influence_label_noise.py) print tables only and stay out of the
# gallery (the user guide shows them).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # only plot_*.py scripts are gallery examples; the others are plain scripts
    "ignore_pattern": r"^(?!plot_).*\.py$",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("skdvl",),
    "backreferences_dir": "generated/backreferences",
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skdvl {release}"
html_theme_options = {
    "github_url": "https://github.com/skdvl/skdvl",
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_context = {"default_mode": "light"}

# -- the command line's --help, written at build time for cli.md -----------------------


def _write_cli_help() -> None:
    import subprocess

    out = HERE / "generated" / "cli"
    out.mkdir(parents=True, exist_ok=True)
    for command in ["", "demo", "value", "clean"]:
        args = [sys.executable, "-m", "skdvl", *command.split(), "--help"]
        text = subprocess.run(args, capture_output=True, text=True, check=True,
                              env={**os.environ, "COLUMNS": "88"}).stdout
        (out / f"{command or 'skdvl'}.txt").write_text(text)


_write_cli_help()

# -- autodoc hooks ---------------------------------------------------------------------
# Unreferenced entries of a References section are normal in numpydoc docstrings (a list
# of the papers behind a method); Sphinx would warn about each.
suppress_warnings = ["ref.citation"]


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn's metadata-routing setters (set_fit_request, ...) are generated on
    # every estimator; their docstrings point into scikit-learn's own glossary.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _merge_repeated_sections(doc: str) -> str:
    """Join a numpydoc section that appears twice into its first occurrence.

    The shared parameter text of the semivalue valuers ends with a Notes section, so a
    valuer with Notes of its own has two, which numpydoc refuses. This shim (docs only,
    the objects are not changed) keeps the build working until the docstring is fixed.
    """
    import re

    lines = doc.expandtabs().split("\n")
    header = re.compile(r"^(\s*)(Notes|Examples|References|Attributes|Parameters)\s*$")
    seen: dict[str, int] = {}
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = header.match(lines[i])
        if m and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            name = m.group(2)
            if name in seen:
                j = i + 2
                body = []
                while j < len(lines):
                    nxt = header.match(lines[j])
                    if nxt and j + 1 < len(lines) and set(lines[j + 1].strip()) == {"-"}:
                        break
                    body.append(lines[j])
                    j += 1
                # insert the body at the end of the first occurrence
                k = seen[name] + 2
                while k < len(out):
                    nxt = header.match(out[k])
                    if nxt and k + 1 < len(out) and set(out[k + 1].strip()) == {"-"}:
                        break
                    k += 1
                out[k:k] = ["", *body]
                seen = {key: (v if v < k else v + len(body) + 1) for key, v in seen.items()}
                i = j
                continue
            seen[name] = len(out)
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _shared_notes() -> str:
    """The Notes section the semivalue valuers' shared parameter text ends with."""
    try:
        from skdvl.valuation import _semivalues
    except ImportError:
        return ""
    shared = getattr(_semivalues, "_SHARED_PARAMS", "")
    at = shared.find("\n    Notes\n    -----\n")
    return shared[at:] if at >= 0 else ""


def _fix_public_docstrings() -> None:
    import importlib
    import inspect

    notes = _shared_notes()
    for module_name in ["skdvl", "skdvl.valuation", "skdvl.utility_learning"]:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) and obj.__doc__):
                continue
            doc = obj.__doc__
            # Parameters written after ``%(params)s`` (ShapleyValuer's truncation) end up
            # inside the shared Notes: move those Notes to the end of the docstring.
            if notes and notes in doc:
                doc = doc.replace(notes, "", 1).rstrip() + "\n" + notes + "\n"
            doc = _merge_repeated_sections(doc)
            if doc != obj.__doc__:
                obj.__doc__ = doc


_fix_public_docstrings()


def _escape_shapes(app, what, name, obj, options, lines):
    # ``ndarray of shape (n_features_in_,)`` and ``(n_test, n_train, *input_shape)`` in
    # numpydoc type fields are read as a reference and an emphasis by docutils: quote
    # the names that end with "_" or start with "*" inside shape tuples.
    import re

    for i, line in enumerate(lines):
        # ``|utility|`` written bare is an undefined substitution for docutils
        if "|" in line:
            line = lines[i] = re.sub(r"(?<![`|\w])\|(\w+)\|(?![`|\w])", r"``|\1|``", line)
        if "shape (" not in line:
            continue
        lines[i] = re.sub(r"(?<![`\w*])(\*?[A-Za-z]\w*_|\*[A-Za-z]\w*)(?=[,)\]])",
                          r"``\1``", line)


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _escape_shapes, priority=100)
