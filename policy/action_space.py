"""What a policy's actions are, and the check that only a rig commanded the same way runs it.

A policy replays the actions its dataset stores. Datasets recorded here store the end-effector pose and the
gripper (``core.types.ACTION_NAMES``); a LeRobotDataset may store joint positions (SO-100, Koch, ALOHA)
or something else. The policy records the kind, the names and the dimension at training time; a rig refuses a
policy whose actions it cannot execute.
"""

from __future__ import annotations

from core.types import ACTION_NAMES

EE_POSE = "ee_pose"  # x y z qx qy qz qw gripper: absolute end-effector targets (metres, unit quaternion, [0, 1])
JOINT_POSITIONS = "joint_positions"  # one absolute target per joint, in the dataset's units
OTHER = "other"

#: Name fragments of joint-space actions in LeRobot's robots (SO-100/101 and Koch "shoulder_pan.pos",
#: ALOHA "left_waist", generic "joint_3").
_JOINT_HINTS = (".pos", "joint", "shoulder", "elbow", "wrist", "waist", "forearm")


class ActionSpaceMismatchError(ValueError):
    """A policy's actions are not what the rig executes."""


def action_kind(names: tuple[str, ...] | list[str]) -> str:
    names = tuple(names)
    if names == ACTION_NAMES:
        return EE_POSE
    if names and all(any(h in n.lower() for h in _JOINT_HINTS) or "gripper" in n.lower() for n in names):
        return JOINT_POSITIONS
    return OTHER


def describe_actions(names: tuple[str, ...] | list[str]) -> dict:
    """The ``action`` entry of a policy's info: kind, names, dimension."""
    return {"kind": action_kind(names), "names": list(names), "dim": len(names)}


def policy_actions(info: dict) -> dict:
    """A policy's action description; policies saved before it was recorded were all pose + gripper."""
    return info.get("action") or describe_actions(ACTION_NAMES)


def check_policy_fits_rig(info: dict, rig_action_names: tuple[str, ...] = ACTION_NAMES) -> None:
    """Raise ActionSpaceMismatchError unless the policy's actions are exactly what the rig commands."""
    actions = policy_actions(info)
    if tuple(actions["names"]) == tuple(rig_action_names):
        return
    raise ActionSpaceMismatchError(
        f"this policy's actions are {actions['kind']} ({actions['dim']}: {', '.join(actions['names'][:8])}"
        f"{', ...' if actions['dim'] > 8 else ''}) but the rig executes {action_kind(rig_action_names)} "
        f"({', '.join(rig_action_names)}); run it on a rig commanded that way, or judge it offline with "
        "`main.py eval-offline`")
