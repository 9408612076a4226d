"""Write the catalog's file table into README.md (between the catalog:files markers).

    python scripts/readme_files.py          # rewrite README.md
    python scripts/readme_files.py --check  # exit 1 when README.md is stale

tests/unit/test_catalog.py fails while the table and wan4step/catalog.py disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wan4step.catalog import markdown_table  # noqa: E402

BEGIN, END = "<!-- catalog:files:begin -->", "<!-- catalog:files:end -->"


def render(text: str) -> str:
    block = f"{BEGIN}\n{markdown_table()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    return pattern.sub(lambda _: block, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    readme = ROOT / "README.md"
    old = readme.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print("README.md file table is stale: run python scripts/readme_files.py")
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
