"""`python main.py gui`: the desktop app on a built-in simulated rig (the PyBullet Panda, a Meta-World task), or
on the rig a rig file describes."""

from __future__ import annotations

from pathlib import Path

from PyQt6 import sip
from PyQt6.QtWidgets import QApplication

from recorder.session import RecorderConfig

from .controller import RigController, RigFactory
from .main_window import MainWindow
from .rig_picker import RigCatalog, builtin_rig_factory, check_robot, file_rig_factory

__all__ = ["RigCatalog", "create_window", "dispose", "file_rig_factory", "rig_setup", "run_app", "sim_rig_factory"]


def sim_rig_factory(image_size: int = 128, rate_hz: float | None = None) -> RigFactory:
    return builtin_rig_factory("sim", image_size, rate_hz)


def rig_setup(robot: str = "sim", rig: str | None = None, camera_size: int = 128,
              rate: float | None = None) -> tuple[RigFactory, RigCatalog]:
    """The factory the window connects first, and what its rig picker offers: the rig file ``rig`` when given (it
    overrides ``robot``; a file may name a built-in simulated rig), else the built-in ``robot`` (``sim``,
    ``metaworld:<task>``) with ``camera_size``. A wrong robot name, Meta-World task or rig file is a ValueError
    here, before the window opens."""
    if rig:
        return file_rig_factory(rig, rate), RigCatalog(current=rig, image_size=camera_size, rate_hz=rate,
                                                       rig_file=rig)
    check_robot(robot)
    return builtin_rig_factory(robot, camera_size, rate), RigCatalog(current=robot, image_size=camera_size,
                                                                      rate_hz=rate)


def create_window(factory: RigFactory, data_root: Path, runs_root: Path, task: str | None = None,
                  connect: bool = True, rig_catalog: RigCatalog | None = None) -> tuple[RigController, MainWindow]:
    """``task``: the task text stored with each episode; None: the connected rig's own task name (a simulated
    rig's, else "teleoperated demonstration": ``recorder.session.default_task``), asked when an episode begins,
    so that it follows the rig the window is connected to. ``rig_catalog``: what the rig picker offers, and
    which of it ``factory`` is (``rig_setup`` gives both; None: ``factory`` is listed as the rig given)."""
    from evaluation.trials import TrialLedger

    controller = RigController(factory, RecorderConfig(task=task), ledger=TrialLedger(Path(runs_root) / "trials.jsonl"))
    window = MainWindow(controller, data_root, runs_root, rig_catalog)
    if connect:
        controller.connect_rig()
    return controller, window


def dispose(controller: RigController, window: MainWindow) -> None:
    """Close the window (the supervisor shuts down, the worker threads end) and free every Qt object now,
    while the QApplication still exists.

    Left to the interpreter, the window, the controller and the workers are freed as the caller's locals
    go, in no fixed order with the QApplication; a Qt object destroyed after it crashes (segmentation fault
    at exit, seen with faulthandler in the main thread as ``main()`` returned)."""
    window.close()
    QApplication.processEvents()  # what the supervisor reported while shutting down, to widgets still alive
    leftovers = [*window.workers, *window.threads]
    sip.delete(controller)  # no signal of it reaches a widget after this
    sip.delete(window)  # its widgets with it
    for obj in leftovers:
        sip.delete(obj)


def run_app(rig: str | None = None, camera_size: int = 128, rate: float | None = None, data_dir: str = "data",
            runs_dir: str = "runs", task: str | None = None, connect: bool = True, verbose: bool = False,
            robot: str = "sim") -> int:
    """Open the window on the rig file ``rig``, else on the built-in ``robot``, and run the event loop; its exit
    code."""
    import logging
    import sys

    factory, catalog = rig_setup(robot, rig, camera_size, rate)  # checked before the window opens
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("ALT Studio")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    controller, window = create_window(factory, Path(data_dir), Path(runs_dir), task=task, connect=connect,
                                       rig_catalog=catalog)
    window.show()
    code = app.exec()
    dispose(controller, window)
    return code

