"""`python main.py gui`: the desktop app on the simulated rig, or on the rig a config file describes."""

from __future__ import annotations

from pathlib import Path

from PyQt6 import sip
from PyQt6.QtWidgets import QApplication

from recorder.session import RecorderConfig

from .controller import RigController, RigFactory
from .main_window import MainWindow


def sim_rig_factory(image_size: int = 128, rate_hz: float | None = None) -> RigFactory:
    def build():
        from robot_drivers.factory import make_rig

        return make_rig("sim", clock="realtime", image_size=image_size, rate_hz=rate_hz), None

    return build


def file_rig_factory(path: str, rate_hz: float | None = None) -> RigFactory:
    from robot_drivers.rig_config import load_rig_config

    config = load_rig_config(path)  # validated now: a typo is reported before the window opens
    if rate_hz is not None:
        config = config.with_rate(rate_hz)  # the per-tick step limits follow the rate

    def build():
        from robot_drivers.rig_config import build_rig, build_teleop

        rig = build_rig(config)
        return rig, build_teleop(config, rig)

    return build


def create_window(factory: RigFactory, data_root: Path, runs_root: Path, task: str | None = None,
                  connect: bool = True) -> tuple[RigController, MainWindow]:
    """``task``: the task text stored with each episode; None: the connected rig's own task name (a simulated
    rig's, else "teleoperated demonstration": ``recorder.session.default_task``), asked when an episode begins,
    so that it follows the rig the window is connected to."""
    from evaluation.trials import TrialLedger

    controller = RigController(factory, RecorderConfig(task=task), ledger=TrialLedger(Path(runs_root) / "trials.jsonl"))
    window = MainWindow(controller, data_root, runs_root)
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
            runs_dir: str = "runs", task: str | None = None, connect: bool = True, verbose: bool = False) -> int:
    """Open the window on the rig file ``rig`` (None: the simulated rig) and run the event loop; its exit code."""
    import logging
    import sys

    factory = file_rig_factory(rig, rate) if rig else sim_rig_factory(camera_size, rate)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("ALT Studio")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    controller, window = create_window(factory, Path(data_dir), Path(runs_dir), task=task, connect=connect)
    window.show()
    code = app.exec()
    dispose(controller, window)
    return code

