"""What evaluation asks of a simulated rig, whichever it is: its scene control, its scenarios by name, and the rig a
policy's demonstrations were recorded on. Nothing here knows a rig or a task: it all goes through
:class:`robot_drivers.scene.SceneControl`."""

from __future__ import annotations

from typing import Iterable

#: ``--scenario all``: every scenario of the rig, in the rig's order.
ALL = "all"


def scene_control_of(rig, what: str = "this"):
    """The rig's scene control; a ValueError when the rig has none (a real rig), saying which rigs have one."""
    control = rig.scene_control()
    if control is None:
        from robot_drivers.factory import robot_names

        raise ValueError(f"{what} needs a simulated rig (a scene it can reset and a task check): give --robot "
                         f"{' or '.join(robot_names())}, not a real rig")
    return control


def pick_scenarios(valid: Iterable[str], names: str | Iterable[str]) -> list[str]:
    """``names`` (one name or several; ``all``: every scenario of the rig) checked against the rig's scenarios
    ``valid`` (its scene control's ``scenarios``). Scenarios belong to the rig (one rig has distractors, another
    may not), so they are checked here, once the rig is made, and not by the argument parser."""
    names = [names] if isinstance(names, str) else list(names)
    valid = tuple(valid)
    out: list[str] = []
    for name in names:
        for scenario in (valid if name == ALL else (name,)):
            if scenario not in valid:
                from robot_drivers.registry import nearest

                raise ValueError(f"unknown scenario {scenario!r}: this rig's scenarios are {', '.join(valid)} "
                                 f"(or {ALL}: every one in turn){nearest(scenario, valid)}")
            if scenario not in out:
                out.append(scenario)
    if not out:
        raise ValueError(f"no scenario given: choose from {', '.join(valid)} (or {ALL})")
    return out


def pick_scenario(valid: Iterable[str], name: str, what: str = "this") -> str:
    """One scenario ``name`` of the rig's ``valid`` ones, for what runs on a single scenario (``all`` refused)."""
    valid = tuple(valid)
    if name == ALL:
        raise ValueError(f"{what} runs on one scenario, not {ALL}: choose one of {', '.join(valid)}")
    return pick_scenarios(valid, name)[0]


def scene_robot(record: dict) -> str:
    """The built-in robot a stored scene record was made on: its ``"rig"`` key; the simulated Panda's records
    carry none (they predate the key), so a record without one is "sim"'s."""
    return str(record.get("rig") or "sim")


def recorded_robot(scenes: dict | None) -> str | None:
    """The built-in robot the scene records ``scenes`` (episode -> record, as a policy's ``episode_scenes``) were
    made on; None when there is no record (a real rig's demonstrations, an import). Demonstrations from several
    rigs in one policy are a ValueError: no single rig can evaluate it."""
    robots = sorted({scene_robot(s) for s in (scenes or {}).values() if s})
    if len(robots) > 1:
        raise ValueError(f"the policy's demonstrations were recorded on several rigs ({', '.join(robots)}); "
                         "evaluate a policy built from one rig's demonstrations")
    return robots[0] if robots else None


def robot_scenarios(robot: str) -> tuple[str, ...]:
    """The scenarios of the built-in ``robot`` (the rig is made to ask it, and closed again): to check a scenario
    name before a long run that makes the rig only at its end."""
    from robot_drivers.factory import make_rig

    rig = make_rig(robot, clock="lockstep", image_size=32)
    try:
        return tuple(scene_control_of(rig).scenarios)
    finally:
        rig.close()
