"""The safety layer on the kinematic arm: per-tick clipping, workspace, gripper, watchdog, stop."""

import threading
import time

import numpy as np
import pytest

from core.errors import ArmCommandError, ArmStoppedError, LimitViolationError, NotConnectedError
from robot_drivers.fake import HOME_POSE, KinematicArm
from robot_drivers.safety import SafeArm, SafetyConfig, clip_action, refuse_outside_workspace
from core.transforms import euler_to_quat, quat_angle
from core.types import Action, Pose

DOWN = euler_to_quat(np.pi, 0, 0)


class ManualClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def arm(clock):
    config = SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.7, 0.3, 0.5),
                          max_translation_per_tick=0.02, max_rotation_per_tick=0.1, watchdog_timeout=0.3)
    inner = KinematicArm(clock=clock)
    safe = SafeArm(inner, config, clock=clock)
    safe.connect()
    yield safe
    safe.disconnect()


def target(x, y, z, yaw=0.0, gripper=1.0):
    return Action(Pose([x, y, z], euler_to_quat(np.pi, 0, yaw)), gripper)


def test_translation_is_clipped_per_tick(arm):
    sent = arm.send_action(target(0.55, 0.0, 0.35))  # 10 cm from home at (0.45, 0, 0.35)
    assert np.linalg.norm(sent.pose.position - HOME_POSE.position) == pytest.approx(0.02)
    assert sent.pose.position[0] == pytest.approx(0.47)
    # The next step is measured from what was sent, not from the request.
    sent2 = arm.send_action(target(0.55, 0.0, 0.35))
    assert sent2.pose.position[0] == pytest.approx(0.49)
    assert arm.counters.translation_clips == 2


def test_rotation_is_clipped_per_tick(arm):
    sent = arm.send_action(target(0.45, 0.0, 0.35, yaw=0.5))
    assert quat_angle(DOWN, sent.pose.orientation) == pytest.approx(0.1, abs=1e-6)
    assert arm.counters.rotation_clips == 1


def test_workspace_and_gripper_are_enforced(arm):
    pos = HOME_POSE.position.copy()
    for _ in range(40):  # walk towards a target far outside the box
        sent = arm.send_action(target(2.0, -2.0, -1.0, gripper=1.7))
        pos = sent.pose.position
    assert np.allclose(pos, [0.7, -0.3, 0.05])
    assert sent.gripper == 1.0
    assert arm.counters.workspace_clips == 40 and arm.counters.gripper_clips == 40
    # What reached the driver is what was returned.
    np.testing.assert_allclose(arm.inner.sent[-1].as_array(), sent.as_array())


def test_watchdog_stops_when_commands_stop(arm, clock):
    arm.send_action(target(0.46, 0.0, 0.35))
    clock.t = 0.2
    assert not arm.check_watchdog()
    clock.t = 0.31
    assert arm.check_watchdog()
    assert arm.inner.stop_calls == 1 and arm.counters.watchdog_stops == 1
    # It does not fire again without a new command, and does not latch.
    clock.t = 5.0
    assert not arm.check_watchdog()
    arm.send_action(target(0.46, 0.0, 0.35))


def test_watchdog_thread_fires_on_real_clock():
    fired = threading.Event()
    safe = SafeArm(KinematicArm(), SafetyConfig(watchdog_timeout=0.05), on_watchdog=fired.set)
    with safe:
        safe.send_action(target(0.45, 0.0, 0.35))
        assert fired.wait(2.0), "watchdog did not stop the arm"
    assert safe.inner.stop_calls >= 1


def test_after_watchdog_next_step_starts_from_measured_pose(arm, clock):
    for _ in range(3):
        arm.send_action(target(0.6, 0.0, 0.35))
    arm.get_state()  # the kinematic arm reaches its target when read
    clock.t = 1.0
    arm.check_watchdog()
    arm.inner.place(Pose([0.40, 0.0, 0.35], DOWN))  # someone moved it while stopped
    sent = arm.send_action(target(0.6, 0.0, 0.35))
    assert sent.pose.position[0] == pytest.approx(0.42)


def test_stop_latches_until_release(arm):
    arm.send_action(target(0.46, 0.0, 0.35))
    arm.stop()
    assert arm.inner.stop_calls == 1
    with pytest.raises(ArmStoppedError, match="release"):
        arm.send_action(target(0.46, 0.0, 0.35))
    with pytest.raises(ArmStoppedError):
        arm.home()
    arm.release()
    arm.send_action(target(0.46, 0.0, 0.35))


def test_measured_pose_outside_workspace_stops_and_raises(arm):
    arm.inner.place(Pose([0.45, 0.0, 0.9], DOWN))
    with pytest.raises(LimitViolationError, match="outside the safe workspace"):
        arm.send_action(target(0.45, 0.0, 0.4))
    assert arm.stopped and arm.inner.stop_calls == 1


def test_not_connected_is_refused():
    safe = SafeArm(KinematicArm())
    with pytest.raises(NotConnectedError, match="connect"):
        safe.send_action(target(0.45, 0.0, 0.35))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="below workspace_max"):
        SafetyConfig(workspace_min=(0.5, 0, 0), workspace_max=(0.4, 1, 1))
    with pytest.raises(ValueError, match="gripper range"):
        SafetyConfig(gripper_min=0.5, gripper_max=1.5)


class RacingArm(KinematicArm):
    """A kinematic arm during whose send_action the operator's STOP arrives (from another thread, in effect)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.safe: SafeArm | None = None
        self.events: list[str] = []

    def send_action(self, action):
        self.safe.stop()
        self.events.append("send")
        return super().send_action(action)

    def stop(self):
        self.events.append("stop")
        super().stop()


def test_a_stop_during_a_command_in_flight_is_repeated_after_it(clock):
    inner = RacingArm(clock=clock)
    safe = SafeArm(inner, SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.7, 0.3, 0.5)), clock=clock)
    inner.safe = safe
    inner.connect()
    with pytest.raises(ArmStoppedError, match="stopped while a command was in flight; stopped again"):
        safe.send_action(target(0.46, 0.0, 0.35))
    assert inner.events == ["stop", "send", "stop"]  # the driver's send may have overtaken the stop: stop again
    assert safe.stopped


class GenerationCheckingArm(KinematicArm):
    """Refuses a command that a stop overtook, as the xArm and UR drivers do (they check their stop generation
    around each SDK call); its send takes ``send_s`` seconds, like a slow network round trip."""

    def __init__(self, send_s: float):
        super().__init__()
        self.send_s = send_s
        self.generation = 0
        self.in_flight = threading.Event()

    def send_action(self, action):
        generation = self.generation
        self.in_flight.set()
        time.sleep(self.send_s)
        self.in_flight.clear()
        if generation != self.generation:
            raise ArmStoppedError("stopped while sending")
        return super().send_action(action)

    def stop(self):
        self.generation += 1
        super().stop()


def test_the_watchdog_does_not_turn_a_command_in_flight_into_a_spurious_stop():
    inner = GenerationCheckingArm(send_s=0.3)
    safe = SafeArm(inner, SafetyConfig(watchdog_timeout=0.05))
    safe.connect()  # starts the watchdog thread
    try:
        home = safe.get_state().ee_pose
        safe.send_action(Action(home, 1.0))  # slower than the watchdog's timeout: it must wait, not cut in
        assert not safe.stopped
        assert inner.sent, "the command did not reach the arm"
    finally:
        safe.disconnect()


def test_stop_waits_briefly_for_a_command_in_flight_then_stops_anyway():
    inner = GenerationCheckingArm(send_s=1.0)  # a hung driver call
    safe = SafeArm(inner, SafetyConfig(stop_wait=0.1, watchdog_timeout=5.0))
    inner.connect()
    home = safe.get_state().ee_pose
    sender = threading.Thread(target=lambda: pytest.raises(ArmStoppedError, safe.send_action, Action(home, 1.0)))
    sender.start()
    assert inner.in_flight.wait(2)
    started = time.monotonic()
    safe.stop()
    assert time.monotonic() - started < 0.5  # it did not wait for the hung call
    assert inner.stop_calls >= 1 and safe.stopped
    sender.join(5)


# -- non-finite numbers: NaN compares False, so a NaN limit or target would slip through every check ----------
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("name", ["max_translation_per_tick", "max_rotation_per_tick", "watchdog_timeout"])
@pytest.mark.parametrize("value", NON_FINITE + [0.0, -0.01, True])
def test_non_finite_or_non_positive_limits_are_refused(name, value):
    with pytest.raises(ValueError, match=rf"SafetyConfig\.{name} must be a (finite )?number"):
        SafetyConfig(**{name: value})


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("which,axis", [("workspace_min", 0), ("workspace_min", 2), ("workspace_max", 1)])
def test_a_non_finite_workspace_box_is_refused(which, axis, bad):
    box = {"workspace_min": [0.2, -0.3, 0.05], "workspace_max": [0.7, 0.3, 0.5]}
    box[which][axis] = bad
    with pytest.raises(ValueError, match="must be finite numbers"):
        SafetyConfig(**box)


def test_an_empty_workspace_box_is_refused():
    with pytest.raises(ValueError, match="below workspace_max"):
        SafetyConfig(workspace_min=(0.2, -0.3, 0.5), workspace_max=(0.7, 0.3, 0.5))  # min == max on z


def test_a_20_cm_command_is_clipped_to_the_1_cm_step():
    """The issue's reproduction through the API: the stock xArm file allows 1 cm per tick at 10 Hz."""
    with pytest.raises(ValueError, match="max_translation_per_tick must be a finite number > 0, got nan"):
        SafetyConfig(max_translation_per_tick=float("nan"))
    safe = SafeArm(KinematicArm(), SafetyConfig(max_translation_per_tick=0.01, watchdog_timeout=5.0))
    safe.inner.connect()  # no watchdog thread
    sent = safe.send_action(target(0.65, 0.0, 0.35))  # 20 cm from home
    assert np.linalg.norm(sent.pose.position - HOME_POSE.position) == pytest.approx(0.01)


@pytest.mark.parametrize("where", ["position", "orientation", "gripper"])
@pytest.mark.parametrize("bad", NON_FINITE)
def test_a_non_finite_action_is_refused_and_nothing_is_sent(arm, where, bad):
    action = target(0.46, 0.0, 0.35)
    if where == "gripper":
        object.__setattr__(action, "gripper", bad)  # Action checks when made; a frozen field can still be forced
    else:
        getattr(action.pose, where)[0] = bad  # the arrays can be changed in place after the check
    with pytest.raises(ArmCommandError, match="non-finite numbers refused.*nothing was sent"):
        arm.send_action(action)
    assert arm.inner.sent == [] and arm.counters.commands == 0
    with pytest.raises(ValueError, match="non-finite"):
        clip_action(action, HOME_POSE, arm.config)


def test_clip_action_never_lets_a_nan_limit_through(arm):
    """A config changed after its check (it is a plain dataclass): the command is refused, not passed on."""
    arm.config.max_translation_per_tick = float("nan")
    with pytest.raises(ValueError, match="max_translation_per_tick must be a finite number > 0, got nan"):
        clip_action(target(0.65, 0.0, 0.35), HOME_POSE, arm.config)
    with pytest.raises(ArmCommandError, match="nothing was sent"):
        arm.send_action(target(0.65, 0.0, 0.35))
    assert arm.inner.sent == []
    arm.config.max_translation_per_tick = 0.02
    arm.config.workspace_max = (0.7, float("nan"), 0.5)
    with pytest.raises(ArmCommandError, match="must be finite numbers"):
        arm.send_action(target(0.65, 0.0, 0.35))
    assert arm.inner.sent == []


def test_a_non_finite_measured_pose_stops_the_arm(arm):
    pose = Pose([0.45, 0.0, 0.35], DOWN)
    arm.inner.place(pose)
    pose.position[1] = float("nan")  # a driver that reports garbage
    with pytest.raises(LimitViolationError, match="non-finite end-effector position"):
        arm.send_action(target(0.45, 0.0, 0.35))
    assert arm.stopped and arm.inner.sent == []


def test_drivers_refuse_a_non_finite_target_too():
    pose = Pose([0.45, 0.0, 0.35], DOWN)
    pose.position[0] = float("nan")
    with pytest.raises(LimitViolationError, match="outside the workspace box"):
        refuse_outside_workspace(pose, (0.2, -0.3, 0.05), (0.7, 0.3, 0.5), "xArm")


def test_a_stop_that_freezes_a_close_under_way_becomes_the_gripper_s_last_command(clock):
    """Nothing told before a STOP resumes after it: a handover continues from where the stop froze the fingers,
    not from the close they were told before it; a gripper at rest keeps its command (and its grip)."""
    inner = KinematicArm(tracking=0.5, clock=clock)
    safe = SafeArm(inner, SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.7, 0.3, 0.5)), clock=clock)
    safe.connect()
    try:
        start = safe.get_state().ee_pose.position
        safe.send_action(target(*start, gripper=0.0))
        assert safe.get_state().gripper == pytest.approx(0.5)  # half-way through the close
        safe.stop()
        assert safe.last_gripper_command == pytest.approx(0.5)
        assert safe.get_state().gripper == pytest.approx(0.5)  # and the fingers stay there
        safe.release()
        safe.send_action(target(*start, gripper=0.0))
        for _ in range(60):
            safe.get_state()
        safe.stop()  # closed: at rest, the command is kept
        assert safe.last_gripper_command == 0.0
    finally:
        safe.disconnect()
