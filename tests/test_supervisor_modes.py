"""The supervisor's state graph is one table (supervisor/modes.py): it covers every command, reaches every mode,
words every refusal, and gamma changes go through it like every other command."""

from __future__ import annotations

import inspect
import re
import threading
import time
from dataclasses import replace

import pytest

import supervisor.modes as modes
from supervisor import (AUTONOMOUS, COMMANDS, DISCONNECTED, HALTED, RECORDING, TELEOP, Events, Mode, Supervisor,
                        Ticket)
from supervisor.modes import POLICY, RIG, Kind, ModeGuard
from supervisor_helpers import rig_factory, tiny_policy, wait_until

pytestmark = pytest.mark.timeout(300)

#: Public Supervisor methods that ask, not command.
QUERIES = {"wait_stopped", "holding_object"}


class _Log(Events):
    def __init__(self):
        self.modes: list[str] = []
        self.infos: list[str] = []

    def mode_changed(self, mode):
        self.modes.append(mode)

    def info(self, text):
        self.infos.append(text)


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture
def sup():
    made = Supervisor(rig_factory(), events=_Log())
    yield made
    made.shutdown()


def _connect(sup):
    assert sup.connect_rig().wait(10)
    assert wait_until(lambda: sup.mode == TELEOP)


# -- the table --------------------------------------------------------------------------------------------------
def test_the_modes_are_the_old_strings():
    assert [m.value for m in Mode] == ["disconnected", "connecting", "teleop", "recording", "autonomous", "replay",
                                       "homing", "halted"]
    assert TELEOP == "teleop" and {"halted": 1}[HALTED] == 1 and f"{RECORDING}" == "recording" == str(RECORDING)
    assert isinstance(AUTONOMOUS, Mode) and AUTONOMOUS is Mode.AUTONOMOUS


def test_the_table_covers_every_command_the_supervisor_accepts(sup, tmp_path):
    """Every public command method issues its row's command (a button presses its row's), every row is issued by
    methods that exist, and every handler is a row's."""
    issued_by_api = {api: row for row in COMMANDS.values() for api in row.api}
    public = {name for name, value in inspect.getmembers(Supervisor)
              if not name.startswith("_") and callable(value) and not isinstance(value, property)}
    assert public - QUERIES == set(issued_by_api), "a Supervisor command is missing from the table (or gone)"
    handlers = {name for name in dir(Supervisor) if name.startswith("_do_")}
    assert handlers == {row.handler for row in COMMANDS.values() if row.handler}, "a handler without a row"
    for row in COMMANDS.values():
        assert (row.handler is None) == (row.kind is Kind.BUTTON)

    submitted: list[str] = []
    submit = sup._submit

    def spy(name, *args):
        submitted.append(name)
        return submit(name, *args)

    sup._submit = spy
    args = {"open_dataset": (str(tmp_path / "demos"),), "delete_episode": (0,), "replay": (0,),
            "trim_episode": (0,), "set_policy": (None,), "set_gamma": (0.9,), "mark_last_trial": ("success",),
            "reset_scene": (0,), "restore_episode_scene": (0,)}
    for api, row in sorted(issued_by_api.items(), key=lambda item: item[0] == "shutdown"):  # shutdown last
        del submitted[:]
        result = getattr(sup, api)(*args.get(api, ()))
        if row.kind is Kind.BUTTON:
            assert result is False and submitted == [], f"{api}: a button outside a recording is not accepted"
        elif row.kind is Kind.QUIT:
            assert submitted == ["quit"] and result is None
        else:
            assert isinstance(result, Ticket) and submitted == [row.name] == [result.name], api
            assert result.wait(10), f"{api} was not answered"


def test_every_mode_is_reachable_and_every_mode_can_be_left():
    assert modes.reachable(Mode.DISCONNECTED) == set(Mode)
    edges = modes.edges()
    for mode in Mode:
        assert any(a == mode for a, _ in edges), f"{mode} is a dead end"
    assert {b for a, b in edges if a == DISCONNECTED} == {Mode.CONNECTING}  # only connect leaves it
    assert {b for a, b in edges if a == Mode.HOMING} == {TELEOP, HALTED}
    assert (HALTED, Mode.REPLAY) not in edges  # a halted arm is released first


def test_the_docstring_prints_the_table():
    """``help(supervisor.modes)`` shows the graph as the table has it (rendered by ``describe``)."""
    def squash(text):
        return re.sub(r"\s+", " ", text).strip()

    assert squash(modes.describe()) in squash(modes.__doc__)


def test_every_guard_has_words_and_the_rows_read_in_order():
    for row in COMMANDS.values():
        for guard in row.guards:
            assert guard.what and guard.refusal
        if row.fresh_only:
            assert row.guards[:2] == (modes.FRESH, RIG), f"{row.name}: staleness and the rig come first"
            assert row.kind in (Kind.MOVES, Kind.RELEASES)
    assert COMMANDS["record"].modes == {TELEOP}
    assert all(COMMANDS[name].modes == {RECORDING} for name in ("keep_episode", "discard_episode",
                                                               "rerecord_episode"))


# -- refusals come from the table ----------------------------------------------------------------------------
def test_a_refused_commands_message_comes_from_the_table(sup, policy, tmp_path, monkeypatch):
    ticket = sup.start_autonomy()  # not connected
    assert ticket.wait(5) and ticket.refusal == RIG.refusal
    assert wait_until(lambda: RIG.refusal in sup.events.infos)  # and the operator is told
    _connect(sup)
    ticket = sup.start_episode()  # no dataset
    assert ticket.wait(5) and ticket.refusal == COMMANDS["record"].guards[2].refusal
    ticket = sup.resume()  # no policy
    assert ticket.wait(5) and ticket.refusal == POLICY.refusal
    # The words are the table's: change a row, and the supervisor says what it says now.
    worded = replace(COMMANDS["resume"], guards=(*COMMANDS["resume"].guards[:2],
                                                 replace(POLICY, refusal="{label}: the table says no policy")))
    monkeypatch.setitem(COMMANDS, "resume", worded)
    ticket = sup.resume()
    assert ticket.wait(5) and ticket.refusal == "Resume: the table says no policy"


def test_a_command_refused_for_the_mode_says_the_mode(sup, policy, tmp_path):
    _connect(sup)
    assert sup.open_dataset(str(tmp_path / "demos")).wait(10)
    policy.gamma = -1.0
    sup.set_policy(policy)
    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS)
    ticket = sup.start_episode()
    guard = COMMANDS["record"].guards[-1]
    assert isinstance(guard, ModeGuard) and AUTONOMOUS not in guard.modes
    assert ticket.wait(5) and ticket.refusal == guard.refusal.format(mode="autonomous")
    assert ticket.refusal == "recording starts from teleoperation; the arm is autonomous now (take over first)"
    assert sup.mode == AUTONOMOUS


def test_a_stale_release_is_refused_in_the_tables_words():
    """Take over queued behind a slow Home, then STOP: refused in the words of the row's first guard."""
    sup = Supervisor(rig_factory(home_s=0.3), events=_Log())
    try:
        _connect(sup)
        sup.home()
        time.sleep(0.05)  # homing is under way on the control thread
        stale = sup.take_over()
        sup.emergency_stop()
        assert stale.wait(5)
        assert stale.refusal == modes.FRESH.refusal.format(label=COMMANDS["take_over"].label)
        assert stale.refusal == ("Take over was pressed before the latest halt and is ignored; press it again if "
                                 "you still want it")
    finally:
        sup.shutdown()


def test_the_mode_changes_are_edges_of_the_table(sup, policy, tmp_path):
    """A day's mode changes, as the supervisor reports them, are all edges the table allows."""
    _connect(sup)
    sup.open_dataset(str(tmp_path / "demos")).wait(10)
    policy.gamma = -1.0
    sup.set_policy(policy)
    for step in (sup.start_episode, sup.start_autonomy, sup.pause, sup.take_over, sup.home, sup.emergency_stop,
                 sup.take_over_and_record, sup.disconnect_rig, sup.connect_rig):
        assert step().wait(10)
        time.sleep(0.2)
    seen = [DISCONNECTED, *sup.events.modes]
    allowed = modes.edges()
    assert [(a, b) for a, b in zip(seen, seen[1:]) if (a, b) not in allowed] == []
    assert {RECORDING, AUTONOMOUS, HALTED, Mode.HOMING, Mode.CONNECTING} <= set(seen)


# -- gamma is a command -------------------------------------------------------------------------------------------
def test_gamma_is_set_on_the_control_thread_and_logged(sup, policy, tmp_path, monkeypatch):
    ticket = sup.set_gamma(0.9)
    assert ticket.wait(5) and ticket.refusal == POLICY.refusal  # no policy loaded
    _connect(sup)
    policy.gamma = -1.0
    sup.set_policy(policy)
    threads = []
    set_gamma = policy.set_gamma

    def spy(value, by="operator"):
        threads.append(threading.current_thread().name)
        return set_gamma(value, by=by)

    monkeypatch.setattr(policy, "set_gamma", spy)
    assert sup.start_autonomy().wait(5)
    assert wait_until(lambda: sup.mode == AUTONOMOUS)
    changes = len(policy.gamma_changes)
    ticket = sup.set_gamma(-0.5, by="test")
    assert ticket.wait(5) and not ticket.refused
    assert policy.gamma == -0.5 and threads == ["control"]
    assert policy.gamma_changes[changes:] and policy.gamma_changes[-1]["by"] == "test"
    time.sleep(0.2)
    assert sup.mode == AUTONOMOUS, "a gamma change ended the run"
    ticket = sup.set_gamma(1.5)  # not a similarity: the policy refuses it, and so does the supervisor
    assert ticket.wait(5) and ticket.refused and policy.gamma == -0.5
    sup.emergency_stop()
    assert wait_until(lambda: sup.mode == HALTED)
    policy.gamma = -1.0
