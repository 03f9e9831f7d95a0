"""After ``sphinx-build``: every gallery example ran and made at least one image.

Usage: ``python doc/check_gallery.py [BUILD_DIR]`` (default ``doc/_build/html``). Exits 1
when an ``examples/plot_*.py`` has no rendered page or no ``sphx_glr_<name>_*.png``
figure; prints each example's run time and the total from sphinx-gallery's record.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent
EXAMPLES = DOC.parent / "examples"
LIMIT_S = 300  # the gallery's budget on 2 cores (issue 16)


def main(argv: list[str]) -> int:
    html = Path(argv[1]) if len(argv) > 1 else DOC / "_build" / "html"
    images = DOC / "auto_examples" / "images"
    problems = []
    scripts = sorted(EXAMPLES.glob("plot_*.py"))
    if not scripts:
        problems.append(f"no examples/plot_*.py in {EXAMPLES}")
    for script in scripts:
        name = script.stem
        if not (html / "auto_examples" / f"{name}.html").is_file():
            problems.append(f"{name}: no page auto_examples/{name}.html in {html}")
        pngs = sorted(images.glob(f"sphx_glr_{name}_[0-9][0-9][0-9].png"))
        if not pngs:
            problems.append(f"{name}: no image (auto_examples/images/sphx_glr_{name}_*.png)")
        elif not (html / "_images" / pngs[0].name).is_file():
            problems.append(f"{name}: {pngs[0].name} is not in {html / '_images'}")
        print(f"{name}: {len(pngs)} image(s)")
    times = DOC / "auto_examples" / "sg_execution_times.rst"
    if times.is_file():
        text = times.read_text(encoding="utf-8")
        total = re.search(r"\*\*(\d+):(\d+)\.(\d+)\*\*", text)
        if total:
            seconds = 60 * int(total.group(1)) + int(total.group(2))
            print(f"gallery run time: {seconds} s (budget {LIMIT_S} s on 2 cores)")
            if seconds > LIMIT_S:
                print(f"warning: the gallery took more than {LIMIT_S} s", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
