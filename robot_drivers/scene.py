"""What only a simulated rig can do, behind one explicit interface.

A real rig's scene is reset by a person and its task is judged by the
operator; a simulated rig can put the world back as it was, say whether the
task succeeded and cover a camera for an OOD drill. Code above the drivers
(recorder, supervisor, GUI) asks ``rig.scene_control()`` for this interface
instead of probing the rig for simulator methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class SceneControl(ABC):
    """The scene of a simulated rig. None of it moves the arm except ``reset``, which homes it."""

    #: the scenarios ``reset`` accepts (for pickers)
    scenarios: tuple[str, ...] = ()
    #: what an operator needs to know to do this rig's task by hand (shown beside the scene), "" if nothing
    task_hint: str = ""
    #: the task in a few words: the task text stored with recordings when the operator gives none
    task_name: str = ""
    #: what a success looks like, in words ("the mug is lifted and held")
    success_text: str = "the task is done"
    #: the placements scripted demonstrations are recorded at (``reset(seed, training_index=i)``, 0 <= i < this)
    training_placements: int = 0

    @abstractmethod
    def reset(self, seed: int, scenario: str | None = None, training_index: int | None = None) -> dict:
        """A new scene (a scenario's placement, or training placement ``training_index``); the arm is homed.
        Returns the scene's record (see :meth:`record`)."""

    @abstractmethod
    def restore(self, record: dict) -> None:
        """Put the world back as a stored record says (the arm is homed)."""

    @abstractmethod
    def record(self) -> dict | None:
        """The current scene as a JSON-able record, stored with each episode; None before any reset."""

    @abstractmethod
    def task_succeeded(self) -> bool:
        """Whether the task is achieved now (the simulator's own check)."""

    @abstractmethod
    def cover_camera(self, name: str, image: np.ndarray | None) -> None:
        """OOD drill: camera ``name`` delivers ``image`` instead of the scene; None uncovers."""

    def went_wrong(self) -> bool:
        """Whether the episode has gone wrong since the last reset, so that the task can no longer be finished
        by taking over from here (an object knocked over, a grasp closed on nothing): the simulator's own
        judgement. An evaluation counts a stop that comes after this as too late (a silent failure)."""
        return self.what_went_wrong() is not None

    def what_went_wrong(self) -> str | None:
        """What :meth:`went_wrong` found, in words (None: nothing went wrong); a rig overrides this one."""
        return None

    def placement(self, record: dict | None) -> np.ndarray | None:
        """A stored scene's variation as a vector (object and goal positions, metres), to measure how far a
        scene lies from the demonstrations' scenes; None if the record has none."""
        return None

    def covered_cameras(self) -> tuple[str, ...]:
        """The cameras an OOD drill covers now (:meth:`cover_camera`): a stop then is the drill's, not the
        policy's lack of experience."""
        return ()

    def describe(self, record: dict | None) -> str:
        """One line for the operator about a stored scene."""
        return "no scene" if not record else ", ".join(f"{k} {v}" for k, v in record.items())


class CoverableSceneControl(SceneControl):
    """The scene control of a simulated rig whose cameras can be covered for the OOD drill (each camera has
    ``cover(image)`` and ``covered``: :class:`robot_drivers.simulated_camera.SimulatedCamera`)."""

    def __init__(self, rig):
        self._rig = rig

    def cover_camera(self, name: str, image: np.ndarray | None) -> None:
        camera = self._rig.cameras.get(name)
        if camera is None:
            raise ValueError(f"no camera {name!r}; the rig has {', '.join(self._rig.cameras)}")
        camera.cover(image)

    def covered_cameras(self) -> tuple[str, ...]:
        return tuple(name for name, camera in self._rig.cameras.items() if camera.covered)
