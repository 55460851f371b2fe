"""Shared pieces of the fuzz tests of damaged inputs: JSON edits, byte damage, running a verb in-process."""

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

import main as cli

JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.lists(st.integers(-3, 3), max_size=3), st.just({}), st.just([]))
KINDS = ["json", "json_delete", "truncate", "flip", "zero", "delete", "garbage", "empty"]


def replace_file(path: Path, data: bytes) -> None:
    """A new file in place of the old one (never written in place: the pristine copies may be hard links)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _paths(tree, prefix=()):
    """Every key path into a JSON tree (dicts, and the first items of lists)."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:4]):
            yield from _paths(v, prefix + (i,))


def mutate_json(tree, choice: int, value, delete: bool):
    """``tree`` with the ``choice``-th key path set to ``value`` (or deleted)."""
    paths = [p for p in _paths(tree) if p]
    if not paths:
        return value
    path = paths[choice % len(paths)]
    node = tree
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return tree


def damage(f: Path, kind: str, n: int, value) -> None:
    """Apply one of KINDS to the file ``f`` (nothing if it is gone); a JSON edit of a file that is no longer
    JSON truncates it instead."""
    if not f.is_file():
        return
    data = f.read_bytes()
    if kind in ("json", "json_delete"):
        try:
            tree = json.loads(data)
        except ValueError:
            tree, kind = None, "truncate"
        if tree is not None:
            replace_file(f, json.dumps(mutate_json(tree, n, value, kind == "json_delete")).encode())
            return
    if kind == "truncate":
        replace_file(f, data[:n % max(1, len(data))])
    elif kind == "flip":
        buf = bytearray(data)
        for i in range(1 + n % 8):
            if buf:
                buf[(n * 7919 + i * 104729) % len(buf)] ^= 1 << (i % 8)
        replace_file(f, bytes(buf))
    elif kind == "zero":
        start = n % max(1, len(data))
        replace_file(f, data[:start] + b"\0" * min(4096, len(data) - start) + data[start + 4096:])
    elif kind == "delete":
        f.unlink()
    elif kind == "garbage":
        replace_file(f, np.random.default_rng(n).integers(0, 256, 200, np.uint8).tobytes())
    else:
        replace_file(f, b"")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main.py ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()
