"""CLI progress when the output is not a terminal: a few whole lines, no carriage-return bars."""

from __future__ import annotations

import io

from recorder.progress import StageLog, progress_bar


def test_a_stage_writes_one_line_when_it_starts_and_one_when_it_ends():
    out = io.StringIO()  # not a terminal
    with progress_bar(total=300, desc="embed", unit="frame", file=out) as bar:
        assert isinstance(bar, StageLog)
        for _ in range(300):
            bar.update(1)
        bar.set_postfix(loss="0.123")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2
    assert lines[0] == "embed: started"
    assert lines[1].startswith("embed: done, 300/300 frame in ") and lines[1].endswith("(loss=0.123)")


def test_a_long_stage_adds_at_most_one_line_a_minute(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("recorder.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    bar = StageLog(total=1000, desc="train", unit="step", file=out)
    for step in range(1000):
        now[0] = step * 0.5  # 500 s in all
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + 8  # start, one a minute for 8 minutes, end
    assert lines[1] == "train: 121/1000 step after 60 s"  # the 121st step came at 60 s
