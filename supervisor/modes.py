"""The supervisor's state graph in one table: its modes, the commands it accepts, when each is refused and why.

Every command is one row of :data:`COMMANDS`; the control thread reads a command's guards (in order: the first
that fails gives the operator's message), its kind and its handler from that row and nowhere else. ``help()`` on
this module prints the graph below; :func:`describe` renders it from the table, and
``tests/test_supervisor_modes.py`` checks that the two agree::

    Modes: disconnected, connecting, teleop, recording, autonomous, replay, homing, halted

    Kinds:
      neutral   served between two ticks: the running activity (a recording too) goes on
      ends      ends the running activity (a recording is kept, marked ended_by_<command>), then runs
      moves     ends it and moves the arm: refused when issued before the latest halt
      releases  ends it and lifts the STOP latch (atomic with STOP): refused when issued before the latest halt
      halt      latches the arm at once on the caller's thread, then ends the activity
      quit      ends the activity, disconnects and ends the control thread
      button    a press on the recording session from any thread, never queued (False when not accepted)

    command           issued by                           kind
    connect           connect_rig                         ends
    disconnect        disconnect_rig                      ends
    open_dataset      open_dataset                        ends
    close_dataset     close_dataset                       ends
    record            start_episode                       moves
    keep_episode      stop_episode                        button
    discard_episode   discard_episode                     button
    rerecord_episode  rerecord_episode                    button
    delete_episode    delete_episode                      neutral
    trim_episode      trim_episode                        ends
    replay            replay                              moves
    set_policy        set_policy                          neutral
    set_gamma         set_gamma                           neutral
    autonomy          start_autonomy                      moves
    mark_trial        mark_last_trial                     neutral
    resume            resume                              releases
    take_over         take_over                           releases
    take_over_record  take_over_and_record                releases
    home              home                                releases
    reset_scene       reset_scene, restore_episode_scene  moves
    set_rig           set_rig_factory                     neutral
    halt              emergency_stop, pause               halt
    quit              shutdown                            quit

    command           accepted in             refused when (in this order)                 leads to
    connect           any                     -                                            connecting
    disconnect        any                     -                                            disconnected
    open_dataset      any                     -                                            (default)
    close_dataset     any                     -                                            (default)
    record            teleop                  stale; no rig; no dataset; mode not teleop   recording
    keep_episode      recording               no dataset; mode not recording               teleop
    discard_episode   recording               no dataset; mode not recording               teleop
    rerecord_episode  recording               no dataset; mode not recording               recording
    delete_episode    any                     -                                            (unchanged)
    trim_episode      any                     -                                            (default)
    replay            with a rig, not halted  stale; no rig; arm halted; no dataset        replay
    set_policy        any                     -                                            (unchanged)
    set_gamma         any                     no policy                                    (unchanged)
    autonomy          with a rig, not halted  stale; no rig; no policy; arm halted         autonomous
    mark_trial        any                     -                                            (unchanged)
    resume            any with a rig          stale; no rig; no policy                     autonomous
    take_over         any with a rig          stale; no rig                                teleop
    take_over_record  any with a rig          stale; no rig; no dataset                    recording
    home              any with a rig          stale; no rig                                homing
    reset_scene       with a rig, not halted  stale; no rig; arm halted; no scene control  (default)
    set_rig           disconnected            mode not disconnected                        (unchanged)
    halt              any                     -                                            halted
    quit              any                     -                                            disconnected

    stale: issued before the latest halt (a STOP, a pause, OOD, a fault, a finished task).
    accepted in: the modes its guards let it run in; one issued while connecting or homing waits.
    (default): what runs when nothing else does: teleop; halted while the arm is latched; disconnected without a rig.
    Every command but a neutral one may lead there (it ended the activity, or its handler failed);
    a refused command changes nothing.
    Without a rig only connect changes the mode (to connecting); with one, connect only ends the activity.

    mode          leaves without a command for  on
    disconnected  -
    connecting    teleop, halted, disconnected  connected; connected while a halt holds; failed
    teleop        recording, halted             START on the teleop device; a fault, the teleop device's STOP
    recording     teleop, recording, halted     episode kept or discarded; re-record; a fault, the teleop device's STOP
    autonomous    halted                        OOD, no progress, task done, a fault, an error
    replay        teleop, halted                replayed to the end; a fault
    homing        teleop, halted                homed; STOP while homing
    halted        halted                        a fault while watching

    The graph (by a command, or without one):
      disconnected  -> connecting
      connecting    -> disconnected, teleop, halted
      teleop        -> disconnected, recording, autonomous, replay, homing, halted
      recording     -> disconnected, teleop, autonomous, replay, homing, halted
      autonomous    -> disconnected, teleop, recording, replay, homing, halted
      replay        -> disconnected, teleop, recording, autonomous, homing, halted
      homing        -> teleop, halted
      halted        -> disconnected, teleop, recording, autonomous, homing
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping


class Mode(str, Enum):
    """What the supervisor does now (a ``str``: it compares equal to its value, and prints as it)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    TELEOP = "teleop"
    RECORDING = "recording"
    AUTONOMOUS = "autonomous"
    REPLAY = "replay"
    HOMING = "homing"
    HALTED = "halted"

    __str__ = str.__str__
    __format__ = str.__format__


# The names the modes had as plain strings (the window and the tests import them).
DISCONNECTED, CONNECTING, TELEOP, RECORDING, AUTONOMOUS, REPLAY, HOMING, HALTED = Mode

ANY = frozenset(Mode)
#: What the supervisor runs when nothing else does (``Supervisor._default``).
DEFAULT = (Mode.TELEOP, Mode.HALTED, Mode.DISCONNECTED)


class Kind(Enum):
    """How the control thread treats a command (see the module's docstring)."""

    NEUTRAL = "neutral"
    ENDS = "ends"
    MOVES = "moves"
    RELEASES = "releases"
    HALT = "halt"
    QUIT = "quit"
    BUTTON = "button"


@dataclass(frozen=True)
class Guard:
    """A condition a command needs, and what the operator is told when it does not hold.

    ``holds(supervisor, command)``: ``command`` is the queued command (its ticket has the stop generation it was
    issued in). ``refusal`` is formatted with ``label`` (the button the operator pressed) and ``mode``."""

    what: str  # when it refuses, in the graph's words
    holds: Callable[[Any, Any], bool]
    refusal: str
    excludes: frozenset = frozenset()  # modes in which it always refuses (for the graph: no rig when disconnected)

    def check(self, supervisor, command, row: "Command") -> str | None:
        if self.holds(supervisor, command):
            return None
        return self.refusal.format(label=row.label, mode=supervisor.mode)


@dataclass(frozen=True)
class ModeGuard(Guard):
    """The modes a command is accepted in; ``refusals`` words the refusal for some of the others."""

    modes: frozenset = ANY
    refusals: Mapping[Mode, str] | None = None

    def check(self, supervisor, command, row: "Command") -> str | None:
        mode = supervisor.mode
        if mode in self.modes:
            return None
        return (self.refusals or {}).get(mode, self.refusal).format(label=row.label, mode=mode)


def only_in(modes, refusal: str, refusals: Mapping[Mode, str] | None = None) -> ModeGuard:
    modes = frozenset(modes)
    return ModeGuard("mode not " + " or ".join(m.value for m in Mode if m in modes), lambda s, c: s.mode in modes,
                     refusal, ANY - modes, modes, refusals)


def _latest_halt_is_released(s, command) -> bool:
    return command.ticket.generation == s.stop_generation


FRESH = Guard("stale", _latest_halt_is_released,
              "{label} was pressed before the latest halt and is ignored; press it again if you still want it")
RIG = Guard("no rig", lambda s, c: s.rig is not None, "the rig is not connected; press Connect first",
            frozenset({Mode.DISCONNECTED}))
POLICY = Guard("no policy", lambda s, c: s.policy is not None, "load a policy first")
DATASET = Guard("no dataset", lambda s, c: s.dataset is not None, "open the dataset that holds the episode first")
SCENE_CONTROL = Guard("no scene control", lambda s, c: s.rig.scene_control() is not None,
                      "only the simulated rig can reset its scene; reset the real one by hand")


def _session(refusal: str) -> Guard:
    return Guard("no dataset", lambda s, c: s.session is not None, refusal)


def _not_halted(refusal: str) -> Guard:
    return Guard("arm halted", lambda s, c: not s.rig.arm.stopped, refusal, frozenset({Mode.HALTED}))


@dataclass(frozen=True)
class Command:
    """One row of the table: a command, how it is issued, when it is refused, what runs it and where it leads."""

    name: str  # the queued command's name (``Ticket.name``)
    api: tuple[str, ...]  # the Supervisor methods that issue it
    kind: Kind
    guards: tuple[Guard, ...] = ()  # checked in this order on the control thread; the first that fails refuses
    leads_to: tuple[Mode, ...] = ()  # the modes it may enter (empty: the mode does not change)
    label: str | None = None  # the button, as a refusal names it
    handler: str | None = None  # the Supervisor method that runs it (default ``_do_<name>``; None for a button)

    def __post_init__(self):
        if self.label is None:
            object.__setattr__(self, "label", self.name)
        if self.handler is None and self.kind is not Kind.BUTTON:
            object.__setattr__(self, "handler", f"_do_{self.name}")

    @property
    def modes(self) -> frozenset:
        """The modes it is accepted in (its other guards aside)."""
        modes = ANY
        for guard in self.guards:
            if isinstance(guard, ModeGuard):
                modes = modes & guard.modes
        return modes

    @property
    def fresh_only(self) -> bool:
        """Refused when issued before the latest halt."""
        return FRESH in self.guards

    def refusal(self, supervisor, command) -> str | None:
        """Why it cannot run now (None: it can)."""
        for guard in self.guards:
            why = guard.check(supervisor, command, self)
            if why is not None:
                return why
        return None


_BEFORE_RECORDING = "open or create a dataset before recording"

COMMANDS: dict[str, Command] = {row.name: row for row in (
    Command("connect", ("connect_rig",), Kind.ENDS, leads_to=(Mode.CONNECTING,)),
    Command("disconnect", ("disconnect_rig",), Kind.ENDS, leads_to=(Mode.DISCONNECTED,)),
    Command("open_dataset", ("open_dataset",), Kind.ENDS, leads_to=DEFAULT),
    Command("close_dataset", ("close_dataset",), Kind.ENDS, leads_to=DEFAULT),
    Command("record", ("start_episode",), Kind.MOVES,
            (FRESH, RIG, _session(_BEFORE_RECORDING),
             only_in({Mode.TELEOP}, "recording starts from teleoperation; the arm is {mode} now (take over first)",
                     {Mode.RECORDING: "an episode is being recorded already"})),
            (Mode.RECORDING,), "Start recording"),
    Command("keep_episode", ("stop_episode",), Kind.BUTTON,
            (_session(_BEFORE_RECORDING), only_in({Mode.RECORDING}, "no episode is being recorded")), (Mode.TELEOP,)),
    Command("discard_episode", ("discard_episode",), Kind.BUTTON,
            (_session(_BEFORE_RECORDING), only_in({Mode.RECORDING}, "no episode is being recorded")), (Mode.TELEOP,)),
    Command("rerecord_episode", ("rerecord_episode",), Kind.BUTTON,
            (_session(_BEFORE_RECORDING), only_in({Mode.RECORDING}, "no episode is being recorded")),
            (Mode.RECORDING,)),
    Command("delete_episode", ("delete_episode",), Kind.NEUTRAL),
    Command("trim_episode", ("trim_episode",), Kind.ENDS, leads_to=DEFAULT),
    Command("replay", ("replay",), Kind.MOVES,
            (FRESH, RIG, _not_halted("the arm is halted; take over or home it before replaying"), DATASET),
            (Mode.REPLAY,), "Replay"),
    Command("set_policy", ("set_policy",), Kind.NEUTRAL),
    Command("set_gamma", ("set_gamma",), Kind.NEUTRAL, (POLICY,)),
    Command("autonomy", ("start_autonomy",), Kind.MOVES,
            (FRESH, RIG, POLICY, _not_halted("the arm is halted; press Resume to release it and run the policy")),
            (Mode.AUTONOMOUS,), "Start"),
    Command("mark_trial", ("mark_last_trial",), Kind.NEUTRAL),
    Command("resume", ("resume",), Kind.RELEASES, (FRESH, RIG, POLICY), (Mode.AUTONOMOUS,), "Resume"),
    Command("take_over", ("take_over",), Kind.RELEASES, (FRESH, RIG), (Mode.TELEOP,), "Take over"),
    Command("take_over_record", ("take_over_and_record",), Kind.RELEASES,
            (FRESH, RIG, _session("open the dataset to record the correction into first (the one the policy was "
                                  "trained on)")),
            (Mode.RECORDING,), "Take over & record"),
    Command("home", ("home",), Kind.RELEASES, (FRESH, RIG), (Mode.HOMING,), "Home"),
    Command("reset_scene", ("reset_scene", "restore_episode_scene"), Kind.MOVES,
            (FRESH, RIG, _not_halted("the arm is halted: a scene reset moves it; take over or home first"),
             SCENE_CONTROL),
            DEFAULT, "the scene reset"),
    Command("set_rig", ("set_rig_factory",), Kind.NEUTRAL,
            (only_in({Mode.DISCONNECTED}, "{label} needs the rig disconnected (it is {mode} now): press Disconnect "
                                          "first"),),
            label="Choosing another rig"),
    Command("halt", ("emergency_stop", "pause"), Kind.HALT, leads_to=(Mode.HALTED,)),
    Command("quit", ("shutdown",), Kind.QUIT, leads_to=(Mode.DISCONNECTED,), handler="_do_disconnect"),
)}

#: How each mode is left without a command (an activity ending on its own): the modes it leads to, and on what.
EXITS: dict[Mode, tuple[tuple[Mode, ...], str]] = {
    Mode.DISCONNECTED: ((), ""),
    Mode.CONNECTING: ((Mode.TELEOP, Mode.HALTED, Mode.DISCONNECTED),
                      "connected; connected while a halt holds; failed"),
    Mode.TELEOP: ((Mode.RECORDING, Mode.HALTED), "START on the teleop device; a fault, the teleop device's STOP"),
    Mode.RECORDING: ((Mode.TELEOP, Mode.RECORDING, Mode.HALTED),
                     "episode kept or discarded; re-record; a fault, the teleop device's STOP"),
    Mode.AUTONOMOUS: ((Mode.HALTED,), "OOD, no progress, task done, a fault, an error"),
    Mode.REPLAY: ((Mode.TELEOP, Mode.HALTED), "replayed to the end; a fault"),
    Mode.HOMING: ((Mode.TELEOP, Mode.HALTED), "homed; STOP while homing"),
    Mode.HALTED: ((Mode.HALTED,), "a fault while watching"),
}

#: Modes no queued command meets: the control thread is busy in a handler then; what is issued meanwhile waits.
BUSY = frozenset({Mode.CONNECTING, Mode.HOMING})


def accepted_in(command: Command) -> frozenset:
    """The modes in which ``command`` may run: all but those a guard always refuses in, and the busy ones."""
    modes = ANY - BUSY
    for guard in command.guards:
        modes = modes - guard.excludes
    return modes


def edges() -> set[tuple[Mode, Mode]]:
    """Every (from, to) mode change the table allows, by a command (or its handler failing) or without one.

    Without a rig (disconnected) only connect changes the mode, to connecting; with a rig, connecting is never
    entered again (connect then only ends the activity), and any command that ends the activity may lead to the
    default."""
    out: set[tuple[Mode, Mode]] = set()
    for command in COMMANDS.values():
        if command.kind is Kind.NEUTRAL:
            continue
        for source in accepted_in(command):
            if source is Mode.DISCONNECTED:
                targets = {t for t in command.leads_to if t is Mode.CONNECTING}
            else:
                targets = set(command.leads_to) - {Mode.CONNECTING}
                if command.kind is not Kind.BUTTON:
                    targets |= set(DEFAULT)  # the activity it ended, its handler failing, or what it asks for
            for target in targets:
                out.add((source, target))
                for after in EXITS[target][0]:  # a handler that enters a mode on its way (connecting, homing)
                    out.add((target, after))
    for source, (targets, _) in EXITS.items():
        out |= {(source, target) for target in targets}
    return {(a, b) for a, b in out if a != b}


def reachable(start: Mode = Mode.DISCONNECTED) -> set[Mode]:
    """The modes the table's commands and exits lead to from ``start``."""
    seen, todo = {start}, [start]
    graph: dict[Mode, set[Mode]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _modes_text(modes) -> str:
    rig = ANY - BUSY - {Mode.DISCONNECTED}
    named = {ANY - BUSY: "any", rig: "any with a rig", rig - {Mode.HALTED}: "with a rig, not halted"}
    return named.get(modes) or ", ".join(m.value for m in Mode if m in modes)


def _leads_text(command: Command) -> str:
    if not command.leads_to:
        return "(unchanged)"
    if command.leads_to == DEFAULT:
        return "(default)"
    return ", ".join(m.value for m in command.leads_to)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def describe() -> str:
    """The state graph, rendered from the table (the module's docstring holds a copy)."""
    lines = ["Modes: " + ", ".join(m.value for m in Mode), "", "Kinds:"]
    kinds = {Kind.NEUTRAL: "served between two ticks: the running activity (a recording too) goes on",
             Kind.ENDS: "ends the running activity (a recording is kept, marked ended_by_<command>), then runs",
             Kind.MOVES: "ends it and moves the arm: refused when issued before the latest halt",
             Kind.RELEASES: "ends it and lifts the STOP latch (atomic with STOP): refused when issued before the "
                            "latest halt",
             Kind.HALT: "latches the arm at once on the caller's thread, then ends the activity",
             Kind.QUIT: "ends the activity, disconnects and ends the control thread",
             Kind.BUTTON: "a press on the recording session from any thread, never queued (False when not accepted)"}
    lines += [f"  {kind.value:<9} {text}" for kind, text in kinds.items()]
    lines.append("")
    lines += _columns([("command", "issued by", "kind")]
                      + [(c.name, ", ".join(c.api), c.kind.value) for c in COMMANDS.values()])
    lines.append("")
    lines += _columns([("command", "accepted in", "refused when (in this order)", "leads to")]
                      + [(c.name, _modes_text(accepted_in(c)), "; ".join(g.what for g in c.guards) or "-",
                          _leads_text(c)) for c in COMMANDS.values()])
    lines += ["", "stale: issued before the latest halt (a STOP, a pause, OOD, a fault, a finished task).",
              "accepted in: the modes its guards let it run in; one issued while connecting or homing waits.",
              "(default): what runs when nothing else does: teleop; halted while the arm is latched; disconnected "
              "without a rig.",
              "Every command but a neutral one may lead there (it ended the activity, or its handler failed);",
              "a refused command changes nothing.",
              "Without a rig only connect changes the mode (to connecting); with one, connect only ends the "
              "activity.", ""]
    lines += _columns([("mode", "leaves without a command for", "on")]
                      + [(m.value, ", ".join(t.value for t in targets) or "-", why)
                         for m, (targets, why) in EXITS.items()])
    graph = edges()
    lines += ["", "The graph (by a command, or without one):"]
    lines += [f"  {a.value:<12}  -> " + ", ".join(b.value for b in Mode if (a, b) in graph) for a in Mode]
    return "\n".join(line.rstrip() for line in lines)
