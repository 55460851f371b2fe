"""Timing on real-time rigs: frames paired with the arm state at their capture time, and servo waypoints."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from robot_drivers.arm import Arm
from robot_drivers.camera import Camera
from core.clock import RealTimeClock
from core.errors import ArmConnectionLostError, ConnectionLostError
from robot_drivers.fake import SyntheticCamera
from robot_drivers.rig import Rig
from robot_drivers.safety import SafeArm, SafetyConfig
from robot_drivers.state_history import StateHistory, interpolate_states
from robot_drivers.trajectory import PoseTrajectory
from core.transforms import euler_to_quat, quat_angle, quat_multiply, rotvec_to_quat
from core.types import Action, Pose, RobotState

DOWN = euler_to_quat(np.pi, 0.0, 0.0)
START = np.array([0.45, -0.1, 0.3])
VELOCITY = np.array([0.1, 0.05, -0.02])  # m/s
YAW_RATE = 0.8  # rad/s about the base z axis
JOINTS_0, JOINT_RATE = np.linspace(-1.0, 1.0, 6), np.linspace(0.1, 0.6, 6)


def moving_state(t: float) -> RobotState:
    """Where an arm moving at constant velocity and yaw rate is at time ``t`` (relative to t = 0)."""
    orientation = quat_multiply(rotvec_to_quat([0.0, 0.0, YAW_RATE * t]), DOWN)
    return RobotState(t, Pose(START + VELOCITY * t, orientation), 1.0 - 0.1 * t, JOINTS_0 + JOINT_RATE * t)


def assert_state_is(state: RobotState, expected: RobotState) -> None:
    assert state.host_time == pytest.approx(expected.host_time, abs=1e-12)
    np.testing.assert_allclose(state.ee_pose.position, expected.ee_pose.position, atol=1e-12)
    assert quat_angle(state.ee_pose.orientation, expected.ee_pose.orientation) < 1e-7
    assert state.gripper == pytest.approx(expected.gripper, abs=1e-12)
    np.testing.assert_allclose(state.joint_positions, expected.joint_positions, atol=1e-12)


class MovingArm(Arm):
    """An arm in constant motion: its state is a function of the time it is read (hardware stand-in)."""

    name = "moving"

    def __init__(self, clock, t0: float = 0.0):
        self._clock, self._t0 = clock, t0
        self._connected = False
        self.reads = 0
        self.fail_next: Exception | None = None

    def connect(self):
        self._connected = True

    def disconnect(self):
        self._connected = False

    @property
    def is_connected(self):
        return self._connected

    def get_state(self) -> RobotState:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.reads += 1
        now = self._clock()
        s = moving_state(now - self._t0)
        return RobotState(now, s.ee_pose, s.gripper, s.joint_positions)

    def send_action(self, action: Action) -> Action:
        return action

    def home(self):
        pass

    def stop(self):
        pass


class TimedCamera(Camera):
    """A camera whose frames arrive when the test says, stamped by the rig's (virtual) clock."""

    def connect(self):
        self._slot.reset()

    def disconnect(self):
        pass

    @property
    def is_connected(self):
        return True

    def deliver(self):
        self._slot.publish(np.zeros((self.height, self.width, 3), np.uint8), None)


class VirtualTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


# -- the state history ---------------------------------------------------------------------------------------
def test_history_interpolates_inside_and_gives_the_nearest_sample_outside():
    history = StateHistory()
    for t in (0.30, 0.10, 0.20):  # from two threads, samples can arrive out of order
        history.add(moving_state(t))
    for t in (0.10, 0.13, 0.2, 0.2999):
        state, skew = history.at(t)
        assert skew == 0.0
        assert_state_is(state, moving_state(t))  # linear motion and a constant yaw rate interpolate exactly
    state, skew = history.at(0.05)  # before the oldest sample: that sample, read 50 ms after the time asked
    assert_state_is(state, moving_state(0.10)) and skew == pytest.approx(0.05)
    state, skew = history.at(0.42)
    assert_state_is(state, moving_state(0.30)) and skew == pytest.approx(-0.12)


def test_history_forgets_what_was_read_before_a_jump():
    history = StateHistory()
    history.add(moving_state(0.1))
    history.clear(since=0.5)
    history.add(moving_state(0.45))  # read before the jump, arriving late: refused
    assert len(history) == 0
    history.add(moving_state(0.6))
    assert_state_is(history.at(0.55)[0], moving_state(0.6))
    with pytest.raises(LookupError, match="empty"):
        StateHistory().at(0.0)


def test_orientation_interpolation_keeps_its_sign_across_the_seam():
    # Two tool-down orientations 0.2 rad apart that sit on either side of the w = 0 seam.
    a = RobotState(0.0, Pose(START, rotvec_to_quat([np.pi - 0.1, 0.0, 0.0])), 1.0, np.zeros(6))
    b = RobotState(1.0, Pose(START, rotvec_to_quat([-(np.pi - 0.1), 0.0, 0.0])), 1.0, np.zeros(6))
    assert quat_angle(a.ee_pose.orientation, b.ee_pose.orientation) == pytest.approx(0.2)
    mid = interpolate_states(a, b, 0.5).ee_pose.orientation
    assert quat_angle(a.ee_pose.orientation, mid) == pytest.approx(0.1)  # the short way, not round the back
    assert quat_angle(mid, rotvec_to_quat([np.pi, 0.0, 0.0])) < 1e-9


# -- the rig pairs frames with the state at their capture time ------------------------------------------------
def virtual_rig(vt: VirtualTime, state_rate_hz: float = 0.0) -> Rig:
    clock = RealTimeClock(10.0)
    clock.now = vt
    arm = SafeArm(MovingArm(vt), SafetyConfig(), clock=vt)
    camera = TimedCamera("hand", 8, 6, fps=30.0, clock=vt)
    return Rig(arm=arm, cameras={"hand": camera}, clock=clock, state_rate_hz=state_rate_hz)


def test_observation_state_is_interpolated_at_the_frames_capture_time():
    vt = VirtualTime()
    rig = virtual_rig(vt)
    with rig:  # connecting reads the state once (t = 0), before any frame
        camera = rig.cameras["hand"]
        for t in (0.02, 0.02 + 1 / 30):
            vt.t = t
            camera.deliver()
        vt.t = 0.1
        obs = rig.observe()  # aligned one frame period back: the frame received at 0.02 + 1/30 s
        assert obs.frames["hand"].host_time == pytest.approx(0.02 + 1 / 30)
        assert obs.capture_time == obs.frames["hand"].host_time and obs.state_skew == 0.0
        assert_state_is(obs.state, moving_state(0.02 + 1 / 30))  # between the reads at 0 s and 0.1 s
        assert_state_is(obs.latest_state, moving_state(0.1))  # the newest measurement, read after the frame
        assert rig.arm.inner.reads == 2  # no background sampling at state_rate_hz = 0
        # After a jump nothing from before may be used: the nearest later state, and how far off it is.
        vt.t = 0.12
        rig.forget_states()
        vt.t = 0.13
        obs = rig.observe()
        assert obs.capture_time == pytest.approx(0.02 + 1 / 30) and obs.state_skew == pytest.approx(0.13 - obs.capture_time)
        assert_state_is(obs.state, moving_state(0.13))


def test_state_poller_samples_between_observations_on_a_real_time_rig():
    t0 = time.monotonic()
    arm = MovingArm(time.monotonic, t0)
    rig = Rig(arm=SafeArm(arm), cameras={"hand": SyntheticCamera("hand", 16, 12, fps=30.0),
                                         "third": SyntheticCamera("third", 16, 12, fps=30.0, seed=1)},
              clock=RealTimeClock(10.0), name="poller-test", state_rate_hz=200.0)
    with rig:
        wait_until(lambda: arm.reads >= 5, "the poller sampled the arm")  # without any observation
        rig.cameras["hand"].wait_for_frame(timeout=10.0); rig.cameras["third"].wait_for_frame(timeout=10.0)
        for _ in range(5):
            obs = rig.observe(max_age=None)  # how fresh the frames are is not the point here
            assert obs.state.host_time == obs.capture_time == obs.frames["hand"].host_time
            assert obs.state_skew == 0.0  # the poller's samples bracket the capture time
            assert obs.latest_state.host_time > obs.capture_time
            assert_state_is(obs.state, RobotState(obs.capture_time, *_moving_at(obs.capture_time - t0)))
            rig.cameras["hand"].wait_for_frame(obs.frames["hand"].sequence + 1, timeout=10.0)
    assert "state-poller-test" not in [t.name for t in threading.enumerate()]  # stopped on disconnect


def _moving_at(t: float):
    s = moving_state(t)
    return s.ee_pose, s.gripper, s.joint_positions


def test_an_arm_error_in_the_poller_is_raised_by_the_next_observation():
    t0 = time.monotonic()
    arm = MovingArm(time.monotonic, t0)
    rig = Rig(arm=SafeArm(arm), cameras={"hand": SyntheticCamera("hand", 16, 12, fps=30.0)},
              clock=RealTimeClock(10.0), state_rate_hz=200.0)
    with rig:
        rig.cameras["hand"].wait_for_frame(timeout=10.0)
        arm.fail_next = ConnectionLostError("the RTDE connection to the UR dropped and was re-established")
        wait_until(lambda: arm.fail_next is None, "the poller met the error")
        # The arm answers again, but what happened in the background is not swallowed.
        with pytest.raises(ArmConnectionLostError, match="dropped and was re-established"):
            rig.observe(max_age=None)
        reads = arm.reads
        wait_until(lambda: arm.reads > reads, "the poller sampled again")
        assert rig.observe(max_age=None).state_skew == 0.0


def test_lockstep_observation_is_the_state_read_at_the_tick():
    from robot_drivers.sim.rig import SimRig, SimRigConfig

    rig = SimRig(SimRigConfig().with_image_size(32, 32))
    try:
        with rig:
            rig.reset(seed=0)
            rig.clock.start()
            obs = rig.observe()
            assert obs.latest_state is obs.state and obs.state_skew == 0.0
            assert obs.capture_time == obs.state.host_time == rig.clock.now()
            assert all(f.host_time == obs.capture_time for f in obs.frames.values())
            assert len(rig.state_history) == 0  # nothing is sampled or interpolated in lock-step
    finally:
        rig.close()


# -- servo waypoints --------------------------------------------------------------------------------------------
def test_trajectory_interpolates_waypoints_and_drops_those_in_the_past():
    a = Pose(np.array([0.4, 0.0, 0.3]), DOWN)
    b = Pose(np.array([0.5, 0.0, 0.3]), quat_multiply(rotvec_to_quat([0.0, 0.0, 0.4]), DOWN))
    trajectory = PoseTrajectory(a, 1.0)
    assert trajectory.schedule(b, 1.2, now=1.0)
    mid = trajectory.at(1.05)
    np.testing.assert_allclose(mid.position, [0.425, 0.0, 0.3], atol=1e-12)
    assert quat_angle(a.orientation, mid.orientation) == pytest.approx(0.1)
    np.testing.assert_allclose(trajectory.at(0.5).position, a.position)  # before the first knot: held
    np.testing.assert_allclose(trajectory.at(9.0).position, b.position)  # after the last: held
    assert not trajectory.schedule(a, 1.1, now=1.1)  # its time has passed: dropped, nothing changes
    assert len(trajectory.knots) == 2
    # A newer waypoint continues from where the trajectory is now, and replaces what was planned after it.
    c = Pose(np.array([0.4, 0.1, 0.3]), DOWN)
    assert trajectory.schedule(c, 1.15, now=1.1)
    assert [t for t, _ in trajectory.knots] == [1.1, 1.15]
    np.testing.assert_allclose(trajectory.at(1.1).position, [0.45, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(trajectory.at(1.125).position, [0.425, 0.05, 0.3], atol=1e-12)
    # One scheduled later than a pending one keeps the pending one on the way.
    d = Pose(np.array([0.4, 0.2, 0.3]), DOWN)
    assert trajectory.schedule(d, 1.3, now=1.12)
    assert [t for t, _ in trajectory.knots] == [1.12, 1.15, 1.3]
