"""The Meta-World rig: a Sawyer arm and one of Meta-World's tabletop tasks (MuJoCo), with the task's own
scripted expert, variations and success check, a wrist camera and one fixed third-person camera.

Registered as the built-in robot ``metaworld`` with the task as its parameter: ``--robot
metaworld:pick-place-v3``. Meta-World and MuJoCo are imported when the rig is made (``pip install
.[metaworld]``), not here."""

from __future__ import annotations

import importlib.util
import os
import sys

from robot_drivers.registry import register_rig

# MuJoCo picks its OpenGL back end when it is first imported: offscreen EGL (software rendering works without
# a GPU) unless the user chose one. Set here, before anything can import MuJoCo through this package.
os.environ.setdefault("MUJOCO_GL", "egl")


def keep_triton_out() -> None:
    """Mesa's software renderer (EGL on a machine without a GPU) loads its own LLVM; Triton, imported by torch
    after that (``import torchvision`` does, through ``torch._dynamo``), loads another, and the process dies in
    Triton's initialisation (segmentation fault). Triton only compiles GPU kernels for ``torch.compile``,
    which nothing here uses: a process that renders Meta-World makes ``import triton`` fail instead (torch
    then reports it absent). Where Triton was imported already, its LLVM came first and both coexist."""
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        sys.modules["triton"] = None

#: The Meta-World rig's control rate (Hz) when none is given: 4 of Meta-World's 12.5 ms steps per tick.
METAWORLD_RATE_HZ = 20.0


def task_names() -> tuple[str, ...]:
    """Meta-World's tasks (v3), sorted; an ImportError naming the extra to install when it is missing."""
    from robot_drivers.metaworld.env import import_metaworld

    return tuple(sorted(import_metaworld().env_dict.ALL_V3_ENVIRONMENTS))


@register_rig("metaworld", parameter="task", choices=task_names)
def make_metaworld_rig(task: str, *, clock: str = "lockstep", image_size: int = 128, rate_hz: float | None = None):
    """The Meta-World rig for ``task`` (e.g. "pick-place-v3"), not connected."""
    from robot_drivers.metaworld.rig import MetaWorldRig, MetaWorldRigConfig

    rate = METAWORLD_RATE_HZ if rate_hz is None else rate_hz
    return MetaWorldRig(MetaWorldRigConfig(task=task, clock=clock, rate_hz=rate, image_size=image_size))
