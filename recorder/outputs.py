"""Output folders that cannot destroy inputs: checked before any work, replaced atomically.

Every verb that writes a folder (``record``, ``train``, ``policy add``, ``export``) asks
:func:`check_output` first, before it records, trains or converts anything. It refuses, naming the
path and why:

- an empty path, ``.``, the working folder or any folder above it, the project's own folder or one
  above it, a git checkout, the filesystem root or the home folder;
- a path that is one of the command's inputs, lies inside one, or holds one;
- a folder of another kind (a dataset where a policy goes, a policy where a dataset goes, a LeRobot
  export, or a folder of files that belong to none of them);
- an existing folder of the same kind without ``--overwrite`` (``record`` appends instead).

:func:`swap_into_place` puts a finished temporary folder at its destination: the new folder
replaces the old one in one ``renameat2(RENAME_EXCHANGE)`` (Linux), so at every instant the old or
the new folder is there, complete. Where the exchange is not available it falls back to two
renames, and :func:`clean_leftovers` (called by the next write to the same path) puts the old
folder back if a crash fell between them. Temporary folders are named
``.<name>.<tag>-<pid>-<hex>``; leftovers of processes that no longer run are removed by the next
write to the same destination.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DATASET, POLICY, LEROBOT, EMPTY, MISSING, OTHER = "dataset", "policy", "LeRobot export", "empty", "missing", "other"
_POLICY_FILES = ("manifest.json", "encoder.safetensors", "database.npz", "index.ann")
_NOUN = {DATASET: "an ALT Studio dataset", POLICY: "an ALT Studio policy", LEROBOT: "a LeRobot dataset"}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<tag>writing|old|exporting)-(?P<pid>\d+)-[0-9a-f]+$")


class OutputPathError(ValueError):
    """An output path that would destroy or mix with something; the message names it and the fix."""


def folder_kind(path: Path) -> str:
    """What ``path`` holds: DATASET, POLICY, LEROBOT, EMPTY, MISSING or OTHER (a file, or unknown files)."""
    path = Path(path)
    if not path.exists():
        return MISSING
    if not path.is_dir():
        return OTHER
    if (path / "dataset.json").exists():
        return DATASET
    if any((path / name).exists() for name in _POLICY_FILES):
        return POLICY
    if (path / "meta" / "info.json").exists():
        return LEROBOT
    entries = [p.name for p in path.iterdir()]
    return EMPTY if set(entries) <= {".lock"} else OTHER  # hidden files are files too (a lone lock is not)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(text: str | os.PathLike | None, kind: str, *, overwrite: bool = False, append: bool = False,
                 inputs: tuple = (), option: str = "--out") -> Path:
    """Refuse an output path that could destroy or mix with something (module docstring); returns it.

    ``kind``: DATASET, POLICY or LEROBOT, what the command writes there. ``append``: an existing folder of
    the same kind is written into (``record``). ``inputs``: the folders the command reads."""
    if text is None or not str(text).strip():
        raise OutputPathError(f"{option} is empty; name the new {kind} folder, e.g. {option} runs/my-{kind}")
    path = Path(text).expanduser()
    real = path.resolve()
    cwd = Path.cwd().resolve()
    where = f"{option} {text}"
    if _within(cwd, real):
        what = "the folder you are in" if real == cwd else f"a folder above the one you are in ({cwd})"
        raise OutputPathError(f"{where} is {what}; writing there would replace it. Name a new folder inside it, "
                              f"e.g. {option} {path / ('my-' + kind)}")
    if _within(PROJECT_ROOT, real):
        raise OutputPathError(f"{where} is ALT Studio's own folder (or one above it); name a new folder, "
                              f"e.g. {option} runs/my-{kind}")
    if real == Path(real.anchor) or real == Path.home().resolve() or (real / ".git").exists():
        raise OutputPathError(f"{where} is the filesystem root, the home folder or a git checkout; name a new "
                              "folder for the output")
    for source in inputs:
        if source is None:
            continue
        src = Path(source).expanduser().resolve()
        if _within(real, src) or _within(src, real):
            relation = "is" if real == src else ("lies inside" if _within(real, src) else "holds")
            raise OutputPathError(f"{where} {relation} the input {source}; the output must be a separate folder")
    for above in real.parents:  # never a dataset inside a policy, a policy inside a dataset, ...
        kind_above = folder_kind(above)
        if kind_above in (DATASET, POLICY, LEROBOT):
            raise OutputPathError(f"{where} lies inside {_NOUN[kind_above]} ({above}); put the {kind} in a folder "
                                  "of its own")
    found = folder_kind(path)
    if found in (MISSING, EMPTY):
        return path
    if found == OTHER:
        if not path.is_dir():
            raise OutputPathError(f"{where} is a file, not a folder; name a folder for the {kind}")
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise OutputPathError(f"{where} holds files that are not {_NOUN[kind]} ({shown}); refusing to write a "
                              f"{kind} among them. Name a new folder.")
    if found != kind:
        raise OutputPathError(f"{where} is {_NOUN[found]}; refusing to {'replace' if overwrite else 'write'} it "
                              f"with a {kind}. Name a new folder.")
    if append:
        return path
    inner = _foreign_inside(path)
    if inner is not None:
        raise OutputPathError(f"{where} holds {_NOUN[folder_kind(inner)]} ({inner}); refusing to "
                              f"{'replace' if overwrite else 'write'} it. Move that out first, or name a new folder.")
    if not overwrite:
        raise OutputPathError(f"{where} already exists ({_NOUN[kind]}); choose another folder or pass --overwrite "
                              "to replace it")
    return path


def _foreign_inside(path: Path, limit: int = 10000) -> Path | None:
    """A dataset, policy or LeRobot export somewhere below ``path`` (not ``path`` itself), else None; looks at
    ``limit`` folders at most (a policy or export has a handful)."""
    seen = 0
    for folder, dirs, _ in os.walk(path):
        if Path(folder) != path and folder_kind(Path(folder)) in (DATASET, POLICY, LEROBOT):
            return Path(folder)
        seen += 1
        if seen >= limit:
            return None
    return None


def temp_sibling(out: Path, tag: str = "writing") -> Path:
    """A new hidden folder beside ``out`` for writing into; stale ones of dead processes are cleaned first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    tmp = out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine now (ids are reused: good for leftovers, not locks)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove the temporary folders of ``out`` left by processes that no longer run; if ``out`` itself is
    missing and an ``.old-`` folder of a dead process is there (a crash between the fallback's two renames),
    put it back first. Returns what was removed."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return []
    stale = []
    for p in parent.iterdir():
        m = _TEMP.match(p.name)
        if m and m["name"] == out.name and p.is_dir() and not process_alive(int(m["pid"])):
            stale.append((m["tag"], p))
    for tag, p in sorted(stale, key=lambda t: t[0] != "old"):
        if tag == "old" and not out.exists():
            os.rename(p, out)
            continue
        shutil.rmtree(p, ignore_errors=True)
    return [p for _, p in stale if not p.exists()]


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def swap_into_place(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``; an existing ``out`` is replaced atomically (module docstring)."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists() and not out.is_symlink():
        os.rename(tmp, out)
    elif _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
    else:
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


def free_space_note(path: Path, needed_bytes: int | None = None) -> str:
    """'N MB free on <mount of path>' (and how much is needed) for a full-disk message."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    text = f"{format_bytes(free)} free in {probe}"
    if needed_bytes:
        text += f", about {format_bytes(needed_bytes)} needed"
    return text


def format_bytes(n: float) -> str:
    """``n`` bytes as B, KB, MB or GB (powers of 1024), for messages."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
