"""Gamepad teleoperation (Xbox / PlayStation / generic) through pygame's joystick module (SDL2).

Default layout (SDL's mapping of an Xbox-style pad): left stick = x/y,
triggers = z (right up, left down), right stick = pitch/yaw, bumpers = roll;
A toggles the gripper, Start starts/stops an episode, Back discards it,
Y re-records it, B is the emergency stop. Every axis passes the same dead
zone and scaling as the SpaceMouse (:class:`robot_drivers.teleop.AxisScaling`).

A trigger rests at -1 once SDL has seen it move, but many pads report 0 (half
pressed) until it is first touched: each trigger counts as released until it
has been seen below -0.9. A pad that is unplugged (SDL's JOYDEVICEREMOVED)
raises :class:`ConnectionLostError`: its emergency-stop button is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.errors import ConnectionLostError, DeviceError, DeviceNotFoundError
from robot_drivers.teleop import GRIPPER_TOGGLE, AxisScaling, ButtonEdges, Teleop, hand_controller_from_rig_table
from core.types import RobotState, TeleopCommand
from robot_drivers.registry import register_teleop


@dataclass
class GamepadConfig:
    index: int = 0  # which pad, in SDL's order
    scaling: AxisScaling = field(default_factory=lambda: AxisScaling(dead_zone=0.15))
    left_x: int = 0  # SDL axis indices (Xbox layout)
    left_y: int = 1
    left_trigger: int = 2
    right_x: int = 3
    right_y: int = 4
    right_trigger: int = 5
    roll_left_button: int = 4  # bumpers
    roll_right_button: int = 5
    buttons: dict[int, str] = field(default_factory=lambda: {0: GRIPPER_TOGGLE, 7: "start_stop", 6: "discard",
                                                             3: "rerecord", 1: "estop"})


def gamepad_from_rig_table(t) -> GamepadConfig:
    """A gamepad's config from its rig file's ``[teleop]`` table ``t`` (a
    :class:`robot_drivers.rig_config.RigTable`): the axes and buttons of
    :func:`robot_drivers.teleop.hand_controller_from_rig_table` (dead_zone 0.15 by default), and

        index   which pad, 0..15 in SDL's order (default 0)
    """
    hand = hand_controller_from_rig_table(t, dead_zone=0.15)
    return GamepadConfig(index=int(t.num("index", 0, 0, 15, integer=True)), **hand)


def _pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")  # read the pad while another window has focus
    try:
        import pygame
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise DeviceError("pygame is not installed: pip install -e '.[gamepad]'") from exc
    return pygame


def _init_sdl():
    """pygame with SDL's joystick subsystem (and the video system that pumps its events) started."""
    pygame = _pygame()
    if not pygame.display.get_init():
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # SDL pumps joystick events through its video system
        pygame.display.init()
    pygame.joystick.init()
    return pygame


def _open_joystick(index: int):
    pygame = _init_sdl()
    count = pygame.joystick.get_count()
    if index >= count:
        raise DeviceNotFoundError(f"no gamepad {index}: {count} connected; plug it in (USB or paired over "
                                  "Bluetooth) and check that /dev/input/event* is readable (docs/bringup.md)")
    pad = pygame.joystick.Joystick(index)
    pad.init()
    return pad


TRIGGER_REST_SEEN = -0.9  # a trigger is trusted once it has read below this (its rest is -1)


def _pump() -> set[int]:
    """Process SDL's events; the instance ids of the joysticks that were unplugged."""
    pygame = _pygame()
    return {event.instance_id for event in pygame.event.get() if event.type == pygame.JOYDEVICEREMOVED}


@register_teleop("gamepad", GamepadConfig, parse=gamepad_from_rig_table)
class GamepadTeleop(Teleop):
    name = "gamepad"

    def __init__(self, config: GamepadConfig | None = None, opener: Callable | None = None,
                 pump: Callable[[], set[int]] | None = None):
        self.config = config or GamepadConfig()
        self._opener = opener or _open_joystick
        self._pump = pump or _pump
        self._pad = None
        self._edges = ButtonEdges(self.config.buttons)
        self._trigger_live: dict[int, bool] = {}  # trigger axis -> seen at rest (below -0.9) since connect

    def _connect(self) -> None:
        self._pad = self._opener(self.config.index)
        self._trigger_live = {self.config.left_trigger: False, self.config.right_trigger: False}
        needed = 1 + max(self.config.left_x, self.config.left_y, self.config.left_trigger, self.config.right_x,
                         self.config.right_y, self.config.right_trigger)
        if self._pad.get_numaxes() < needed:
            raise DeviceError(f"gamepad '{self._pad.get_name()}' has {self._pad.get_numaxes()} axes, the mapping "
                              f"needs {needed}; set the axis indices in the rig file's [teleop] table")

    def _disconnect(self) -> None:
        if self._pad is not None:
            self._pad.quit()
            self._pad = None

    def _trigger(self, axis: int) -> float:
        """A trigger's press in [0, 1]: it rests at -1 and goes to +1; 0 until it has been seen at rest."""
        value = self._pad.get_axis(axis)
        if value < TRIGGER_REST_SEEN:
            self._trigger_live[axis] = True
        return (value + 1.0) / 2.0 if self._trigger_live[axis] else 0.0

    def _axes(self) -> np.ndarray:
        c, pad = self.config, self._pad
        up, down = self._trigger(c.right_trigger), self._trigger(c.left_trigger)
        roll = float(pad.get_button(c.roll_right_button)) - float(pad.get_button(c.roll_left_button))
        # Stick y is +1 when pulled towards the operator: forward on the stick is +x for the robot.
        return np.array([-pad.get_axis(c.left_y), -pad.get_axis(c.left_x), up - down,
                         roll, -pad.get_axis(c.right_y), -pad.get_axis(c.right_x)])

    def get_command(self, state: RobotState, dt: float) -> TeleopCommand:
        if self._pad is None:
            self.connect()  # opened on first use: the recorder polls teleop devices without connecting them
        if self._pad.get_instance_id() in self._pump():
            name = self._pad.get_name()
            self._pad = None
            raise ConnectionLostError(f"gamepad '{name}' was disconnected (its emergency-stop button with it); "
                                      "plug it back in (or re-pair it) and start again")
        linear, angular = self.config.scaling.velocities(self._axes())
        pressed = {i for i in range(self._pad.get_numbuttons()) if self._pad.get_button(i)}
        toggle, events = self._edges.update(pressed)
        gripper = (0.0 if state.gripper > 0.5 else 1.0) if toggle else None
        return TeleopCommand(linear, angular, gripper, events)

    def reset(self) -> None:
        self._edges.reset()
