"""One Meta-World task's environment behind a lock: its variations, the absolute-target controller, and the
expert's check that a stopped episode can still be finished.

Meta-World (MuJoCo) acts through a 4-D action in [-1, 1]: a change of the hand's mocap target (1 cm per step
at full scale) and a gripper effort (-1 open, +1 close); one step is 5 physics steps of 2.5 ms. This module
turns the project's absolute targets into those actions: each step commands ``clip(GAIN x (target - hand))``,
which integrates the hand's error into the mocap target and so settles on the target itself (a mocap aimed at
the target would leave the hand ~4 mm short under gravity).

A variation is the task's own random vector (object, goal positions), drawn uniformly from the task's own
range (``_random_reset_space``) with our seeded generator, and put into the world through the task's reset. A
vector the task's reset would draw again (an object too close to its goal: the task loops until it likes one)
is refused, never looped on.
"""

from __future__ import annotations

import difflib
import math
import os
import threading
import warnings

import numpy as np

#: Meta-World's hand holds one orientation: the mocap quaternion (w, x, y, z) = (1, 0, 1, 0) / sqrt(2), here
#: in the project's order (x, y, z, w).
HAND_QUAT_XYZW = np.array([0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5)])
#: Delta action per metre of hand error (1 = 1 cm per step): 10 settles a 12-15 cm move to 3 mm in ~25 steps
#: without overshoot; 50 and above oscillate.
TRACKING_GAIN = 30.0
#: How far (m) Meta-World's mocap target may lead the hand. Each step adds the tracking delta to the mocap, so a
#: hand held back (against a door's edge, a peg against its box) let it run on, 15-38 cm on door-open, and then
#: jumped after it when freed (20 cm in one tick, past every limit the safety layer puts on the commands); the
#: scripted door-open demonstrations took 39-189 ticks, 44-61 with the bound. The bound keeps a push (the weld
#: pulls harder the more the mocap leads). Free moves lead by at most 7 cm; presses (button-press) 14 cm.
MAX_MOCAP_LEAD_M = 0.1
#: Steps the expert gets to finish the task from where a stop left it (``recoverable``).
RECOVERY_STEPS = 300
#: At most this many steps to open the gripper and raise the hand before the expert's second try.
RECOVERY_BACK_OFF_STEPS = 60
#: The hand's start moved by this much (m, in x and in y, each way) for the tries that ask whether the task's
#: expert is a steady judge of a scene (``expert_judges_scene``): on some scenes it finishes from its start and
#: fails from 3 mm beside it (peg-insert-side: the peg's approach grazes the box), and there its failure to finish
#: after a run says nothing about what the run did.
START_JITTER_M = 0.003
#: A run disturbed an object when it moved it more than this (m) or turned it more than this (degrees): the
#: verdict on scenes the expert itself cannot finish (``disturbed``).
DISTURBED_M, DISTURBED_DEG = 0.01, 15.0
#: A finger slower than this is at rest (closed on something, closed, or open): a stop keeps the gripper's command.
#: A close moves the fingers at 0.1-0.2 m/s for about five control ticks; settled on the peg they jitter below 0.01.
FINGERS_AT_REST_M_S = 0.03
#: A gripper told a new command this recently counts as moving whatever its fingers' speed (not picked up yet).
FINGER_REACTION_S = 0.02
#: The gripper's finger pads (Meta-World's Sawyer): an object both touch is held between the fingers.
PAD_GEOMS = ("leftpad_geom", "rightpad_geom")


class RejectedVariation(Exception):
    """The task's reset refused a variation (it would have drawn another)."""


def import_metaworld():
    """The ``metaworld`` module, with MuJoCo rendering offscreen through EGL unless ``MUJOCO_GL`` says otherwise
    (software rendering works on a machine without a GPU)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robot_drivers.metaworld import keep_triton_out

    keep_triton_out()
    try:
        import metaworld
        import metaworld.policies  # noqa: F401 - the experts
    except ImportError as exc:
        raise ImportError(f"the Meta-World rig needs Meta-World and MuJoCo ({exc}); install them with "
                          "pip install '.[metaworld]' (scripts/setup.sh does)") from exc
    return metaworld


def check_task(task: str) -> str:
    """``task`` if Meta-World has it (v3); a ValueError listing the tasks and the nearest name otherwise."""
    metaworld = import_metaworld()
    names = sorted(metaworld.env_dict.ALL_V3_ENVIRONMENTS)
    if task not in names:
        close = difflib.get_close_matches(task, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown Meta-World task {task!r}{hint} (the {len(names)} tasks: {', '.join(names)})")
    return task


class MetaWorldEnv:
    """The environment of one task. Every method takes :attr:`lock`; the physics thread (real time), the
    cameras and the arm share it."""

    def __init__(self, task: str):
        metaworld = import_metaworld()
        self.task = check_task(task)
        env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
        env.set_task(metaworld.MT1(task, seed=0).train_tasks[0])
        env.max_path_length = 1 << 62  # episodes end when the operator or the evaluation says so
        self.env = env
        self.model, self.data = env.model, env.data
        self.expert = metaworld.policies.ENV_POLICY_MAP[task]()
        # the experts warn that their gains exceed Meta-World's action range; that is how they are written
        warnings.filterwarnings("ignore", message="Constant", module="metaworld.policies.policy")
        self.lock = threading.RLock()
        #: the arm's joint velocities (a stop brakes them: carried at speed into a stop, the hand swung on and
        #: shook a held puck out of the fingers, 3 of 160 stops measured on pick-place, none with the brake)
        self._arm_dofs = [int(self.model.joint(f"right_j{i}").dofadr[0]) for i in range(7)]
        #: (qpos address, dof address) of the right and the left finger's slide joints
        self._finger_joints = tuple((int(self.model.joint(name).qposadr[0]), int(self.model.joint(name).dofadr[0]))
                                    for name in ("r_close", "l_close"))
        self.step_dt = float(env.model.opt.timestep * env.frame_skip)
        self.time = 0.0  # simulated seconds since the rig was made; never goes back (a reset does not rewind it)
        space = env._random_reset_space
        self.variation_low = np.asarray(space.low, dtype=np.float64)
        self.variation_high = np.asarray(space.high, dtype=np.float64)
        self.mocap_low = np.asarray(env.mocap_low, dtype=np.float64)
        self.mocap_high = np.asarray(env.mocap_high, dtype=np.float64)
        self.target = np.zeros(3)
        self.gripper_command = 1.0
        self._gripper_told_at = -1.0  # simulated time the gripper's command last changed
        self.obs: np.ndarray | None = None
        self.succeeded = False
        self.variation: np.ndarray | None = None
        self.lighting: tuple[float, float, float] | None = None
        self._light_defaults = (self.model.light_diffuse.copy(), self.model.light_ambient.copy(),
                                self.model.vis.headlight.diffuse.copy(), self.model.vis.headlight.ambient.copy())
        self.scene_version = 0  # bumped by every reset: a camera draws again after one, moved or not
        self._start: tuple | None = None  # (snapshot, observation) of the scene as the last reset left it
        self._rest_lead: np.ndarray | None = None  # the mocap from the hand at rest (set by every reset)
        self._start_finishable: bool | None = None
        self._start_steady: bool | None = None

    # -- variations ---------------------------------------------------------------------------------------
    def reset_to(self, variation, lighting: tuple[float, float, float] | None = None) -> None:
        """Put the task's objects where ``variation`` says, the hand at its start; RejectedVariation when the
        task refuses the vector (its reset would draw another)."""
        vec = np.asarray(variation, dtype=np.float64).copy()
        if vec.shape != self.variation_low.shape:
            raise ValueError(f"a {self.task} variation has {self.variation_low.size} numbers, not {vec.size}")
        calls = [0]

        def given():
            calls[0] += 1
            if calls[0] > 1:
                raise RejectedVariation(f"{self.task} refuses the variation {np.round(vec, 3).tolist()}")
            return vec.copy()

        env = self.env
        task_reset = env.reset_model

        def reset_model():  # Meta-World's reset runs the task's reset twice: each run draws once
            calls[0] = 0
            return task_reset()

        with self.lock:
            env._get_state_rand_vec = given  # the task's reset draws its positions through this
            env.reset_model = reset_model
            try:
                obs, _ = env.reset()
            finally:
                del env._get_state_rand_vec, env.reset_model
            env._last_rand_vec = vec.copy()
            self.obs = obs
            self.variation = vec
            self.succeeded = False
            self.target = self.hand_position()
            # where the mocap sits, from the hand, with the hand at rest (the weld's offset, and its sag under
            # gravity): a stop puts it back there, so the hand halts where it is
            self._rest_lead = np.asarray(self.data.mocap_pos[0], dtype=np.float64) - obs[:3]
            self.gripper_command, self._gripper_told_at = 1.0, -1.0
            self._set_lighting(lighting)
            self.scene_version += 1
            self._start = (self._snapshot(), obs.copy())  # the scene as reset: went_wrong's reference
            self._start_finishable = None
            self._start_steady = None

    def draw(self, rng: np.random.Generator, low=None, high=None, tries: int = 200) -> np.ndarray:
        """A variation drawn uniformly from [low, high] (default: the task's own range) that the task accepts;
        the world is reset to it."""
        low = self.variation_low if low is None else np.asarray(low, dtype=np.float64)
        high = self.variation_high if high is None else np.asarray(high, dtype=np.float64)
        for _ in range(tries):
            vec = rng.uniform(low, high)
            try:
                self.reset_to(vec)
                return vec
            except RejectedVariation:
                continue
        raise RuntimeError(f"{self.task}: no variation in {tries} draws was accepted by the task's reset")

    def _set_lighting(self, lighting: tuple[float, float, float] | None) -> None:
        """``lighting`` (brightness, warmth, ambient) scales the model's lights; None restores them."""
        diffuse, ambient, head_diffuse, head_ambient = self._light_defaults
        self.lighting = lighting
        if lighting is None:
            self.model.light_diffuse[:] = diffuse
            self.model.light_ambient[:] = ambient
            self.model.vis.headlight.diffuse[:] = head_diffuse
            self.model.vis.headlight.ambient[:] = head_ambient
            return
        brightness, warmth, extra_ambient = lighting
        tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
        self.model.light_diffuse[:] = np.clip(diffuse * brightness * tint, 0, 1)
        self.model.light_ambient[:] = np.clip(ambient + extra_ambient, 0, 1)
        self.model.vis.headlight.diffuse[:] = np.clip(head_diffuse * brightness * tint, 0, 1)
        self.model.vis.headlight.ambient[:] = np.clip(head_ambient + extra_ambient, 0, 1)

    # -- the arm ------------------------------------------------------------------------------------------
    def hand_position(self) -> np.ndarray:
        with self.lock:
            return np.asarray(self.obs[:3], dtype=np.float64).copy()

    def finger_opening(self) -> float:
        """Meta-World's measured finger opening: 1 open, ~0.3 closed on nothing, ~0.45 on a puck."""
        with self.lock:
            return float(np.clip(self.obs[3], 0.0, 1.0))

    def joint_positions(self) -> np.ndarray:
        with self.lock:
            return np.asarray(self.data.qpos[:9], dtype=np.float64).copy()

    def command(self, position, gripper: float) -> None:
        """The absolute target the next steps track (clipped into the mocap's range) and the gripper command
        in [0, 1] (1 open)."""
        with self.lock:
            self.target = np.clip(np.asarray(position, dtype=np.float64), self.mocap_low, self.mocap_high)
            command = float(np.clip(gripper, 0.0, 1.0))
            if command != self.gripper_command:
                self._gripper_told_at = self.time
            self.gripper_command = command

    def hold(self) -> float | None:
        """Stop: the arm's joints are braked, the target becomes where the hand is now, and the mocap is drawn
        back to where it sits with the hand at rest there (left where it led the hand, by up to MAX_MOCAP_LEAD_M,
        it would pull the hand on: 2-3 cm after a stop measured on door-open).

        Fingers at rest, or with something between both pads, keep the gripper's command (a grip on the peg or
        the puck keeps squeezing it, even one the close has only just made); fingers closing or opening, or told
        to within FINGER_REACTION_S (not moving yet), are stopped where they are: braked, and given targets at
        (or, for one finger, just past) their present positions. Meta-World's two finger actuators are position
        servos driven by one number, one finger to +a and the other to -a, with a gain high enough that the
        command is in effect a squeeze force. Returns that command when the fingers were frozen, else None."""
        with self.lock:
            self.target = self.hand_position()
            if self._rest_lead is not None:
                self.data.mocap_pos[0] = self.target + self._rest_lead
            self.data.qvel[self._arm_dofs] = 0.0  # braked, as the simulated Panda's joints are at a stop
            right, left = self._finger_joints
            speed = max(abs(float(self.data.qvel[right[1]])), abs(float(self.data.qvel[left[1]])))
            just_told = self.time - self._gripper_told_at < FINGER_REACTION_S  # a motion about to begin
            if (speed <= FINGERS_AT_REST_M_S and not just_told) or self._gripped_bodies():
                return None
            # one number drives both fingers (+a and -a): the one that holds the finger further along the motion
            # where it is, and leaves the other a slight push the same way (never back: a close frozen on an
            # object does not let it go)
            r, l = float(self.data.qpos[right[0]]), -float(self.data.qpos[left[0]])
            squeeze = max(r, l) if self.gripper_command < 0.5 else min(r, l)
            self.gripper_command = float(np.clip(0.5 * (1.0 - squeeze), 0.0, 1.0))
            # and braked, as the arm's joints are: left with their speed, the heavy fingers would coast on 1-2 cm
            self.data.qvel[[right[1], left[1]]] = 0.0
            return self.gripper_command

    def action(self) -> np.ndarray:
        """Meta-World's action for the next step toward the current target."""
        delta = np.clip(TRACKING_GAIN * (self.target - self.obs[:3]), -1.0, 1.0)
        return np.r_[delta, 1.0 - 2.0 * self.gripper_command]

    @property
    def physics_dt(self) -> float:
        """Seconds per :meth:`step` (the clocks of :mod:`robot_drivers.sim_clock` step in these units)."""
        return self.step_dt

    def step(self, count: int = 1) -> None:
        with self.lock:
            for _ in range(count):
                self.obs, _, _, _, info = self.env.step(self.action())
                self._bound_mocap_lead()
                self.succeeded = bool(info["success"])
                self.time += self.step_dt

    def _bound_mocap_lead(self) -> None:
        """Draw the mocap back to within MAX_MOCAP_LEAD_M of the hand (the next observation's hand)."""
        hand = self.obs[:3]
        lead = self.data.mocap_pos[0] - hand
        dist = float(np.linalg.norm(lead))
        if dist > MAX_MOCAP_LEAD_M:
            self.data.mocap_pos[0] = hand + lead * (MAX_MOCAP_LEAD_M / dist)

    # -- the expert ---------------------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The task's own scripted expert's action for the current observation (4-D, Meta-World's units)."""
        with self.lock:
            return np.asarray(self.expert.get_action(self.obs), dtype=np.float64)

    def _snapshot(self) -> tuple[np.ndarray, dict]:
        """A copy of the world's state (MuJoCo's full integration state and the environment's step counters)."""
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        env = self.env
        saved = {k: getattr(env, k) for k in ("curr_path_length", "_prev_obs", "_last_stable_obs",
                                              "_did_see_sim_exception") if hasattr(env, k)}
        return state, {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in saved.items()}

    def _put_back(self, snapshot: tuple[np.ndarray, dict]) -> None:
        import mujoco

        state, saved = snapshot
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        for k, v in saved.items():
            setattr(self.env, k, v.copy() if isinstance(v, np.ndarray) else v)
        mujoco.mj_forward(self.model, self.data)

    def recoverable(self, steps: int = RECOVERY_STEPS) -> bool:
        """Whether an operator taking over from the current state can still finish the task: the task's expert
        tries on a copy of the state, first from where things stand, then after opening the gripper and raising
        the hand to its start height, then after also taking the hand back to where it started, as an operator
        taking over would (the experts are no recovery policies: one that finds its hand closed just above the
        object keeps pressing down on it; the door's, started from some other spot, jams the door). Each try
        gets ``steps`` steps. The world is put back exactly as it was afterwards (nothing of the tries is seen or
        kept)."""
        with self.lock:
            if self.succeeded:
                return True
            return self._expert_finishes(self.obs, steps)

    def _expert_finishes(self, obs_now: np.ndarray, steps: int) -> bool:
        env = self.env
        snapshot = self._snapshot()
        try:
            home = None if self._start is None else self._start[1][:3].copy()
            above = np.r_[obs_now[:2], max(obs_now[2], float(env.hand_init_pos[2]))]
            # the hand's way before each try: none; open and raise it to its start height; and take it back to
            # where it started
            tries = [(), (above,)] + ([] if home is None else [(above, np.r_[home[:2], above[2]], home)])
            starts: list[np.ndarray] = []
            for goals in tries:
                start = goals[-1] if goals else obs_now[:3]
                if goals and obs_now[3] > 0.9 and any(np.linalg.norm(start - s) < 0.01 for s in starts):
                    continue  # it would start where an earlier try did (a scene as reset: all three)
                starts.append(start)
                if self._try_expert(obs_now, goals, steps):
                    return True
                self._put_back(snapshot)
            return False
        finally:
            self._put_back(snapshot)

    def _try_expert(self, obs: np.ndarray, goals, steps: int, within: float = 0.01) -> bool:
        """From the current state (observed as ``obs``): the hand, gripper open, taken through ``goals`` in turn
        (each reached to within ``within`` metres, ``RECOVERY_BACK_OFF_STEPS`` steps at most), then the task's
        expert for ``steps`` steps; whether the task was done. The caller puts the world back."""
        env = self.env
        obs = np.array(obs, copy=True)
        for goal in goals:
            for _ in range(RECOVERY_BACK_OFF_STEPS):
                obs, _, _, _, _ = env.step(np.r_[np.clip(TRACKING_GAIN * (goal - obs[:3]), -1.0, 1.0), -1.0])
                if np.linalg.norm(goal - obs[:3]) < within and obs[3] > 0.9:
                    break
        for _ in range(steps):
            obs, _, _, _, info = env.step(np.asarray(self.expert.get_action(self._unclipped_goal(obs)),
                                                     dtype=np.float64))
            if info["success"]:
                return True
        return False

    def _unclipped_goal(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` with the goal where it is: Meta-World clips a step's observation to its observation space, whose
        goal box is the task's own range, so an extrapolated goal beyond it reaches the expert moved onto the
        box's edge (while the success check measures the true goal). The verdict asks the expert about the real
        scene."""
        goal = getattr(self.env, "_target_pos", None)
        if goal is None or not np.any(obs[-3:]):
            return obs  # a task that does not observe its goal
        out = np.array(obs, copy=True)
        out[-3:] = goal
        return out

    def finishable_from_start(self, steps: int = RECOVERY_STEPS) -> bool | None:
        """Whether the expert could have finished the task from the scene as the last reset left it (None: no
        reset yet). Asked once per scene, on a copy: the world is put back as it is now."""
        with self.lock:
            if self._start is None:
                return None
            if self._start_finishable is None:
                now = self._snapshot()
                try:
                    self._put_back(self._start[0])
                    self._start_finishable = self._expert_finishes(self._start[1], steps)
                finally:
                    self._put_back(now)
            return self._start_finishable

    def expert_judges_scene(self, steps: int = RECOVERY_STEPS) -> bool | None:
        """Whether the task's expert is a steady judge of the scene as the last reset left it (None: no reset
        yet): it finishes the task from the start, and from the start with the hand moved ``START_JITTER_M``
        each way in x and in y first. Where it fails from a few millimetres beside its own start, its failing
        after a run (``recoverable``) is a matter of where the hand happened to stand, not of what the run did.
        Asked once per scene, on a copy: the world is put back as it is now."""
        with self.lock:
            if self._start is None:
                return None
            if self._start_steady is None:
                steady = bool(self.finishable_from_start(steps))
                if steady:
                    now = self._snapshot()
                    try:
                        home = self._start[1][:3]
                        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                            self._put_back(self._start[0])
                            goal = home + START_JITTER_M * np.array([dx, dy, 0.0])
                            if not self._try_expert(self._start[1], (goal,), steps, within=0.001):
                                steady = False
                                break
                    finally:
                        self._put_back(now)
                self._start_steady = steady
            return self._start_steady

    def disturbed(self, moved_m: float = DISTURBED_M, tilted_deg: float = DISTURBED_DEG,
                  held_excused: bool = False) -> str | None:
        """What the run did to the task's objects since the last reset (None: nothing): an object moved by more
        than ``moved_m`` or tilted by more than ``tilted_deg`` (Meta-World's observation: each object's position
        and quaternion, padded with zeros where a task has fewer objects). ``held_excused``: an object held between
        the fingers now (:meth:`held`) counts as moved only if it also turned: the run carries it, and an operator
        taking over puts it back as it was; one dropped, pushed or knocked over does count."""
        with self.lock:
            if self._start is None:
                return None
            before, now = self._start[1], self.obs
            for i, (at, quat) in enumerate(((4, 7), (11, 14))):
                p0, p1 = before[at:at + 3], now[at:at + 3]
                q0, q1 = before[quat:quat + 4], now[quat:quat + 4]
                if not np.any(p0) and not np.any(q0):
                    continue  # no such object in this task
                shift = float(np.linalg.norm(p1 - p0))
                if shift > moved_m and not (held_excused and self.held(p1)):
                    return f"object {i + 1} moved {100 * shift:.1f} cm"
                n0, n1 = np.linalg.norm(q0), np.linalg.norm(q1)
                if n0 > 1e-6 and n1 > 1e-6:
                    angle = math.degrees(2 * math.acos(min(1.0, abs(float(q0 @ q1) / (n0 * n1)))))
                    if angle > tilted_deg:
                        return f"object {i + 1} turned {angle:.0f} degrees"
            return None

    def held(self, position) -> bool:
        """Whether the object observed at ``position`` is held between the fingers: both finger pads touch the
        body whose geometry lies nearest that point (Meta-World observes an object by a point on it: the peg's
        head, the puck's centre). Geometry nothing can touch (the mocap's marker, which rides with the hand) is
        not a candidate."""
        with self.lock:
            model, data = self.model, self.data
            roots = model.body_rootid[model.geom_bodyid]
            pads = self._pad_geoms()
            if pads is None:
                return False
            arm = {int(roots[g]) for g in pads}
            candidates = [g for g in range(model.ngeom) if int(roots[g]) not in arm and int(roots[g]) != 0
                          and (model.geom_contype[g] or model.geom_conaffinity[g])]  # not a drawn-only marker
            if not candidates:
                return False
            nearest = min(candidates, key=lambda g: float(np.linalg.norm(data.geom_xpos[g] - np.asarray(position))))
            return int(roots[nearest]) in self._gripped_bodies()

    def _pad_geoms(self) -> list[int] | None:
        import mujoco

        pads = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in PAD_GEOMS]
        return None if min(pads) < 0 else pads

    def _gripped_bodies(self) -> set[int]:
        """The (top) bodies both finger pads touch now: what the fingers hold between them."""
        with self.lock:
            model, data = self.model, self.data
            pads = self._pad_geoms()
            if pads is None:
                return set()
            roots = model.body_rootid[model.geom_bodyid]
            touched = [set(), set()]
            for k in range(data.ncon):
                c = data.contact[k]
                for side, pad in enumerate(pads):
                    if pad in (c.geom1, c.geom2):
                        other = c.geom2 if c.geom1 == pad else c.geom1
                        touched[side].add(int(roots[other]))
            return (touched[0] & touched[1]) - {int(roots[pads[0]]), int(roots[pads[1]]), 0}

    def touching(self) -> list[str]:
        """The things on the table that touch one another now, in words ("peg touches box"): contacts between
        bodies that are neither the arm nor the table, the floor or the wall, each named by its top body (for a
        late stop's verdict: a peg driven into its box)."""
        import mujoco

        with self.lock:
            model, data = self.model, self.data
            fixed = {0}
            for name in ("tablelink", "RetainingWall", "base", "mocap"):
                bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
                if bid >= 0:
                    fixed.add(int(model.body_rootid[bid]))
            pairs = set()
            for i in range(data.ncon):
                contact = data.contact[i]
                roots = [int(model.body_rootid[model.geom_bodyid[g]]) for g in (contact.geom1, contact.geom2)]
                if roots[0] == roots[1] or fixed & set(roots):
                    continue
                names = sorted(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, r) or f"body {r}" for r in roots)
                pairs.add(f"{names[0]} touches {names[1]}")
            return sorted(pairs)

    def object_positions(self) -> np.ndarray:
        """The task's objects' positions and its goal as Meta-World observes them (for checks and logs)."""
        with self.lock:
            return np.r_[self.obs[4:7], self.obs[-3:]].copy()
