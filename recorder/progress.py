"""Progress for the command line: tqdm bars on a terminal, a few plain lines anywhere else.

A bar redrawn with carriage returns turns a log file or a CI transcript into hundreds of lines of
noise; when the output is not a terminal each stage says when it starts, at most one line a minute
while it runs, and one line when it ends.
"""

from __future__ import annotations

import sys
import time


class StageLog:
    """The part of tqdm's interface the verbs use, writing whole lines."""

    HEARTBEAT_S = 60.0

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", file=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.n = 0
        self.postfix = ""
        self._started = self._last_line = time.monotonic()
        self._closed = False
        self._line("started")

    def _count(self) -> str:
        return f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"

    def _line(self, what: str) -> None:
        print(f"{self.desc}: {what}" + (f" ({self.postfix})" if self.postfix else ""), file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_line >= self.HEARTBEAT_S:
            self._last_line = now
            self._line(f"{self._count()} after {now - self._started:.0f} s")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line(f"done, {self._count()} in {time.monotonic() - self._started:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", file=None, disable: bool = False):
    """A tqdm bar when ``file`` (stderr by default) is a terminal, else a :class:`StageLog`; ``disable``: silent."""
    if disable:
        import io

        return StageLog(total, desc, unit, io.StringIO())
    file = file or sys.stderr
    if file.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file)
    return StageLog(total, desc, unit, file)


class LazyProgress:
    """A progress callback ``(done, total)`` whose bar appears at the first call (never, when not ``enabled``):
    a refusal before any work stays one line on stderr."""

    def __init__(self, desc: str, unit: str, enabled: bool = True):
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = progress_bar(total=total, desc=self.desc, unit=self.unit)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
