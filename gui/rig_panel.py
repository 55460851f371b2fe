"""The rig panel: connection and the rig picker, device lights, live camera previews, arm state, teleop keys."""

from __future__ import annotations

import time

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import (QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                             QWidget)

from core.errors import DeviceError
from robot_drivers.keyboard import KEY_HELP

from .controller import RigController
from .rig_picker import RigCatalog, RigPicker
from .widgets import ERROR, OFF, OK, WARN, ArmStateView, ImageView, KeyHelp, StatusLight, StopButton

PREVIEW_HZ = 30.0
STALE_S = 0.5
PREVIEW_MIN_SIDE = 240  # px: a 128-px hand view shown at twice its size or more


class RigPanel(QWidget):
    def __init__(self, controller: RigController, rig_catalog: RigCatalog | None = None, parent=None):
        super().__init__(parent)
        self.controller = controller
        self.rig = None
        self._last_tick = 0.0
        self._shown: dict[str, int] = {}

        self.stop_button = StopButton()
        self.stop_button.clicked.connect(controller.emergency_stop)

        self.connect_button = QPushButton("Connect")
        self.disconnect_button = QPushButton("Disconnect")
        self.connect_button.clicked.connect(controller.connect_rig)
        self.disconnect_button.clicked.connect(controller.disconnect_rig)
        buttons = QHBoxLayout()
        buttons.addWidget(self.connect_button)
        buttons.addWidget(self.disconnect_button)
        self.picker = RigPicker(controller, rig_catalog)  # which rig Connect builds; only while disconnected

        self.arm_light = StatusLight("arm")
        self.teleop_light = StatusLight("teleop")
        self.camera_lights: dict[str, StatusLight] = {}
        self._lights = QVBoxLayout()
        self._lights.addWidget(self.arm_light)
        self._lights.addWidget(self.teleop_light)

        self.previews: dict[str, ImageView] = {}
        self._preview_grid = QGridLayout()

        self.arm_state = ArmStateView()

        self.home_button = QPushButton("Home (H)")
        self.gripper_button = QPushButton("Open / close gripper (G)")
        self.home_button.clicked.connect(lambda: controller.request_home(self.window()))
        self.gripper_button.clicked.connect(controller.keyboard.toggle_gripper)
        for b in (self.home_button, self.gripper_button):
            b.setFocusPolicy(b.focusPolicy().NoFocus)
        teleop_box = QGroupBox("Teleoperation (keyboard, always on)")
        tl = QVBoxLayout(teleop_box)
        tl.addWidget(KeyHelp(KEY_HELP))
        row = QHBoxLayout()
        row.addWidget(self.gripper_button)
        row.addWidget(self.home_button)
        tl.addLayout(row)

        self.scenario_combo = QComboBox()
        self.scene_button = QPushButton("New scene")
        self.scene_button.clicked.connect(self._new_scene)
        self._scene_seed = 1000
        self.sim_box = QGroupBox("Simulated scene")
        self.scene_label = QLabel("")  # where the object stands now: stays until the scene changes
        self.scene_label.setWordWrap(True)
        self.task_hint = QLabel("")  # the rig's own words on doing its task by hand
        self.task_hint.setWordWrap(True)
        self.task_hint.setStyleSheet("color: #555;")
        sl = QVBoxLayout(self.sim_box)
        row = QHBoxLayout()
        row.addWidget(self.scenario_combo, 1)
        row.addWidget(self.scene_button)
        sl.addLayout(row)
        sl.addWidget(self.scene_label)
        sl.addWidget(self.task_hint)
        self.sim_box.hide()

        layout = QVBoxLayout(self)
        layout.addWidget(self.stop_button)
        layout.addLayout(buttons)
        layout.addWidget(self.picker)
        layout.addLayout(self._lights)
        layout.addLayout(self._preview_grid)
        layout.addWidget(self.arm_state)
        layout.addWidget(teleop_box)
        layout.addWidget(self.sim_box)
        layout.addStretch(1)

        controller.connected.connect(self._on_connected)
        controller.disconnected.connect(self._on_disconnected)
        controller.tick.connect(self._on_tick)
        controller.scene_changed.connect(lambda text: self.scene_label.setText(f"Scene: {text}"))
        self._timer = QTimer(self)
        self._timer.setInterval(int(1000 / PREVIEW_HZ))
        self._timer.timeout.connect(self._refresh)
        self._timer.start()
        self._set_connected(False)

    # -- connection -------------------------------------------------------
    def _set_connected(self, connected: bool) -> None:
        self.connect_button.setEnabled(not connected)
        self.disconnect_button.setEnabled(connected)
        self.home_button.setEnabled(connected)
        self.gripper_button.setEnabled(connected)

    def _on_connected(self, rig) -> None:
        self.rig = rig
        self._shown.clear()
        for name in [n for n in self.previews if n not in rig.cameras]:  # another rig, other cameras
            self.previews.pop(name).deleteLater()
            self.camera_lights.pop(name).deleteLater()
        for i, name in enumerate(rig.cameras):
            if name not in self.previews:
                self.previews[name] = ImageView(f"{name} (live)", min_side=PREVIEW_MIN_SIDE)
                self.camera_lights[name] = StatusLight(f"camera {name}")
                self._lights.addWidget(self.camera_lights[name])
            self._preview_grid.removeWidget(self.previews[name])  # placed again, in the rig's order
            self._preview_grid.addWidget(self.previews[name], 0, i)
        for name, view in self.previews.items():
            camera = rig.cameras.get(name)
            view.set_overlay(camera.grasp_overlay if camera is not None else None)  # the grasp aid
        self.teleop_light.set_state(OK, self.controller.teleop.name)
        control = rig.scene_control()
        self.sim_box.setVisible(control is not None)
        self.task_hint.setText(control.task_hint if control is not None else "")
        listed = [self.scenario_combo.itemText(i) for i in range(self.scenario_combo.count())]
        if control is not None and listed != list(control.scenarios):  # the first rig, or another one
            self.scenario_combo.clear()
            self.scenario_combo.addItems(control.scenarios)
        self._set_connected(True)

    def _on_disconnected(self) -> None:
        self.rig = None
        for name, view in self.previews.items():
            view.set_image(None, "disconnected")
            self.camera_lights[name].set_state(OFF, "disconnected")
        self.arm_light.set_state(OFF, "disconnected")
        self.teleop_light.set_state(OFF)
        self.arm_state.show_state(None)
        self._set_connected(False)

    def _new_scene(self) -> None:
        self._scene_seed += 1
        self.controller.reset_scene(self._scene_seed, self.scenario_combo.currentText())

    # -- live data --------------------------------------------------------
    def _on_tick(self, record) -> None:
        self._last_tick = time.monotonic()
        rig = self.rig
        stopped = rig is not None and rig.arm.stopped
        counters = rig.arm.counters if rig is not None else None
        holding = self.controller.holding_object(record.observation.state)
        self.arm_state.show_state(record.observation.state, stopped, counters, holding)
        for name, view in self.previews.items():
            if view.overlay is not None:  # the camera on the gripper says when the object is actually held
                view.set_badge("holding" if holding else None)

    def _refresh(self) -> None:
        """Previews at the cameras' own rate: show each camera's newest frame if it is new."""
        rig = self.rig
        if rig is None:
            return
        now = rig.clock.now()
        for name, camera in rig.cameras.items():
            light = self.camera_lights.get(name)
            try:
                frame = camera.read_latest(max_age=None)
            except DeviceError as exc:
                light.set_state(ERROR, str(exc))
                self.previews[name].set_image(None, "no signal")
                continue
            age = now - frame.host_time
            if age > STALE_S:
                light.set_state(ERROR, f"no new frame for {age:.1f} s")
            else:
                light.set_state(OK, f"{camera.width}x{camera.height} @ {camera.fps:g} fps")
            if self._shown.get(name) != frame.sequence:
                self._shown[name] = frame.sequence
                self.previews[name].set_image(frame.image)
        state, stopped, counters, holding = self.arm_state.last
        if state is not None and stopped != rig.arm.stopped:  # halted with no loop running: no tick says so
            self.arm_state.show_state(state, rig.arm.stopped, counters, holding)
        if rig.arm.stopped:
            self.arm_light.set_state(WARN, "halted")
        elif time.monotonic() - self._last_tick < 1.0:
            self.arm_light.set_state(OK, "moving under control")
        else:
            self.arm_light.set_state(WARN, "connected, no control loop running")
