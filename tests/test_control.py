"""The control loop on virtual devices: ending reasons, camera loss, timing."""

import threading

import numpy as np
import pytest

from core.clock import RealTimeClock
from robot_drivers.control import ControlLoop, TeleopSource
from core.errors import ArmConnectionLostError, ConnectionLostError, StaleFrameError
from robot_drivers.fake import KinematicArm, ManualCamera, ManualClock, SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm
from robot_drivers.teleop import Button, Teleop
from core.types import TeleopCommand


class ConstantTeleop(Teleop):
    """Pushes along +x, presses ``button`` on poll ``press_at``."""

    def __init__(self, velocity=(0.05, 0, 0), press_at=None, button=Button.STOP):
        self.velocity = np.array(velocity, float)
        self.press_at, self.button, self.polls = press_at, button, 0

    def get_command(self, state, dt):
        self.polls += 1
        buttons = frozenset({self.button}) if self.polls == self.press_at else frozenset()
        return TeleopCommand(linear_velocity=self.velocity, gripper=0.5, buttons=buttons)


def fake_rig(rate=50.0):
    return Rig(arm=SafeArm(KinematicArm()), cameras={"a": SyntheticCamera("a", 32, 24, fps=100.0),
                                                      "b": SyntheticCamera("b", 32, 24, fps=100.0, seed=1)},
               clock=RealTimeClock(rate))


def test_teleop_is_integrated_into_absolute_targets_until_stop():
    rig = fake_rig()
    records = []
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop(press_at=10)), on_tick=records.append)
    assert result.reason == "stop_button" and result.ticks == 10 and result.ok
    xs = [r.sent.pose.position[0] for r in records]
    np.testing.assert_allclose(np.diff(xs), 0.05 / 50.0, atol=1e-9)  # v * dt per tick
    assert all(r.sent.gripper == 0.5 for r in records)
    times = [r.timing.scheduled for r in records]
    np.testing.assert_allclose(np.diff(times), 0.02, atol=1e-9)


def test_unplugged_camera_ends_the_loop_and_stops_the_arm():
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()

        ticks = []

        def on_tick(record):  # counted here: on a loaded machine the clock may skip grid indices
            ticks.append(record)
            if len(ticks) == 6:
                rig.cameras["b"].unplug()

        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop()), max_ticks=200, on_tick=on_tick)
        assert rig.arm.stopped
    assert result.reason == "camera_lost" and "unplugged" in str(result.error)
    assert 5 < result.ticks < 200


def test_arm_connection_loss_is_an_arm_error_not_a_lost_camera():
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()

        ticks = []

        def on_tick(record):  # counted here: on a loaded machine the clock may skip grid indices
            ticks.append(record)
            if len(ticks) == 4:
                rig.arm.inner.fail_next = ConnectionLostError("lost the connection to the xArm")

        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop()), max_ticks=50, on_tick=on_tick)
        assert rig.arm.inner.stop_calls >= 1
    assert result.reason == "arm_error" and isinstance(result.error, ArmConnectionLostError)
    assert "lost the connection to the xArm" in str(result.error)


class UnpluggedTeleop(ConstantTeleop):
    def get_command(self, state, dt):
        if self.polls == 2:
            raise ConnectionLostError("gamepad 'Xbox' was disconnected")
        return super().get_command(state, dt)


def test_teleop_device_loss_is_named_as_such():
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        result = ControlLoop(rig).run(TeleopSource(UnpluggedTeleop()), max_ticks=50)
        assert rig.arm.inner.stop_calls >= 1
    assert result.reason == "teleop_lost" and "disconnected" in str(result.error)


def test_estop_button_stops_the_arm_immediately():
    rig = fake_rig()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop(press_at=3, button=Button.ESTOP)))
        assert rig.arm.stopped
    assert result.reason == "estop" and result.ticks == 3


def test_cancel_event_ends_the_loop():
    rig = fake_rig()
    cancel = threading.Event()
    with rig:
        rig.cameras["a"].wait_for_frame(); rig.cameras["b"].wait_for_frame()
        ticks = []  # counted here: on a loaded machine the clock may skip grid indices
        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop()), cancel=cancel,
                                      on_tick=lambda r: ticks.append(r) or (len(ticks) == 5 and cancel.set()))
    assert result.reason == "cancelled" and result.ticks == 5


class VirtualTime:
    def __init__(self):
        self.t = 100.0

    def sleep(self, s):
        self.t += s


def test_realtime_clock_counts_late_and_skipped_ticks():
    vt = VirtualTime()
    clock = RealTimeClock(10.0, sleep=vt.sleep)
    clock.now = lambda: vt.t  # drive the clock from virtual time
    clock.start()
    t1 = clock.wait_next_tick()
    assert (t1.index, t1.late, t1.skipped) == (1, False, 0) and t1.actual == pytest.approx(100.1)
    vt.t += 0.05  # work that takes half a tick: late
    t2 = clock.wait_next_tick()
    assert not t2.late  # it slept to the grid point
    vt.t += 0.13  # overran the next tick by 30 ms: late but not skipped
    t3 = clock.wait_next_tick()
    assert t3.late and t3.skipped == 0
    vt.t += 0.35  # a long stall (now 100.68): skip grid points 100.4 and 100.5 instead of bursting
    t4 = clock.wait_next_tick()
    assert t4.skipped == 2 and t4.index == 6 and t4.late and t4.scheduled == pytest.approx(100.0 + t4.index * 0.1)


def manual_rig(intervals_b, rate=10.0):
    """A rig on a clock that moves only when ticked: camera 'a' steady at 15 fps, camera 'b' at 15 fps
    delivering at ``intervals_b`` (s, in turn)."""
    clock = ManualClock(rate)
    cameras = {"a": ManualCamera("a", clock, fps=15.0), "b": ManualCamera("b", clock, fps=15.0, intervals=intervals_b)}
    return Rig(arm=SafeArm(KinematicArm(clock=clock.now), clock=clock.now), cameras=cameras, clock=clock,
               state_rate_hz=0)


def test_a_jittery_camera_runs_on_and_one_that_stops_ends_the_loop_within_the_bound():
    # Camera 'b' hiccups like a starved renderer: every sixth frame comes 0.6 s after the one before, older
    # than the fixed 0.5 s limit used to allow; then, at tick 300 (30 s), it stops delivering altogether.
    rig = manual_rig([1 / 15] * 5 + [0.6])
    stopped_at = []

    def on_tick(record):
        if record.timing.index == 300:
            rig.cameras["b"].stop_delivering()
            stopped_at.append(rig.cameras["b"].last_frame_time)

    with rig:
        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop(velocity=(0, 0, 0))), max_ticks=1000,
                                      on_tick=on_tick)
        assert rig.arm.stopped
    error = result.error
    assert result.reason == "camera_lost" and isinstance(error, StaleFrameError) and result.ticks > 300
    bound = rig.cameras["b"].stale_limit.bound_s
    assert bound == 1.0 and error.camera == "b" and "camera 'b'" in str(error)
    assert error.limit_s <= bound and error.age_s <= bound + rig.clock.dt  # noticed at the first tick past it
    assert rig.clock.now() - stopped_at[0] == pytest.approx(error.age_s)


def test_a_fixed_stale_limit_still_halts_at_its_own_value():
    rig = manual_rig([1 / 15] * 5 + [0.6])
    rig.cameras["b"].set_stale_limit(0.5)  # a rig file's stale_limit_s: the jitter above now halts
    with rig:
        result = ControlLoop(rig).run(TeleopSource(ConstantTeleop(velocity=(0, 0, 0))), max_ticks=1000)
    assert result.reason == "camera_lost" and result.error.limit_s == 0.5 and result.ticks < 20
