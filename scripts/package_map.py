"""Writes the "packages, file by file" tables of docs/architecture.md from the code itself: each package's
`__init__` docstring and each file's first docstring (or comment) line, so the map cannot drift from the code.

    .venv/bin/python scripts/package_map.py          # rewrite the tables in docs/architecture.md
    .venv/bin/python scripts/package_map.py --check  # exit 1 if they are out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- package-map: begin -->", "<!-- package-map: end -->"
FOLDERS = ("cli", "core", "evaluation", "gui", "lerobot_bridge", "policy", "policy/aligned", "policy/landmarks", "recorder",
           "robot_drivers", "robot_drivers/sim", "robot_drivers/metaworld", "supervisor", "benchmarks", "scripts", "tests", "tests_lerobot")


def first_line(path: Path) -> str:
    """The first line of a Python file's docstring, or of a shell script's first comment after the shebang."""
    text = path.read_text()
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(text)) or ""
        line = doc.strip().split("\n\n")[0]
    else:
        comments = [raw[1:].strip() for raw in text.splitlines()[1:] if raw.startswith("#")]
        line = " ".join(comments[:2]) if comments else ""
    return " ".join(line.split()).replace("|", "\\|")


def table(folder: str) -> str:
    base = ROOT / folder
    files = sorted(p for p in base.iterdir() if p.is_file() and p.suffix in (".py", ".sh")
                   and p.name not in ("__init__.py", "conftest.py"))
    lines = [f"### `{folder}/`", ""]
    init = base / "__init__.py"
    if init.is_file() and first_line(init):
        lines += [first_line(init), ""]
    lines += ["| file | what it is |", "|---|---|"]
    lines += [f"| `{p.name}` | {first_line(p) or '(no docstring)'} |" for p in files]
    return "\n".join(lines)


def render() -> str:
    return "\n\n".join(table(f) for f in FOLDERS if (ROOT / f).is_dir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/architecture.md is current")
    args = parser.parse_args()
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render()}\n{END}{tail}"
    if args.check:
        if new != text:
            print("docs/architecture.md's package map is out of date: run scripts/package_map.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
