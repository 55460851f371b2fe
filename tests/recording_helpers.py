"""Shared helpers for recorder tests: record real sim episodes quickly."""

from pathlib import Path

from recorder.dataset import Dataset
from recorder.session import RecorderConfig, RecordingSession, spec_for_rig
from robot_drivers.factory import make_rig, make_teleop
from robot_drivers.sim.task import training_scene


def record_sim(out: Path, episodes: int, image_size: int = 32, codec: str = "jpeg", on_event=None, seed: int = 0):
    """Record ``episodes`` scripted sim demonstrations; returns the kept EpisodeInfos."""
    rig = make_rig("sim", image_size=image_size)
    teleop = make_teleop("scripted", rig, seed=seed)
    kept = []
    with rig:
        with Dataset.open_or_create(out, spec_for_rig(rig, codec=codec)) as dataset:
            session = RecordingSession(rig, dataset, teleop, RecorderConfig(), on_event=on_event)
            while len(kept) < episodes:
                index = dataset.next_index()
                scene = training_scene(rig.task, index)
                rig.reset(seed + index, scene=scene)
                teleop.reset(seed + index)
                outcome = session.record_episode(extra={"scene": {"mug": [scene.mug.x, scene.mug.y, scene.mug.yaw]}},
                                                 accept=rig.success)
                if outcome.kept is not None:
                    kept.append(outcome.kept)
    rig.close()
    return kept


def fill_disk_on_new_episodes(dataset: Dataset, camera: str):
    """Fault injection: from now on, each new episode's image pack for ``camera`` writes to /dev/full
    (ENOSPC, as on a full disk). Returns a function that undoes it."""
    real_new_episode = dataset.new_episode

    def new_episode_on_full_disk(*args, **kwargs):
        writer = real_new_episode(*args, **kwargs)
        pack = writer._packs[camera]
        pack._file.close()
        pack._file = open("/dev/full", "wb", buffering=0)
        return writer

    dataset.new_episode = new_episode_on_full_disk

    def undo() -> None:
        dataset.new_episode = real_new_episode

    return undo


#: A policy small enough to train in seconds on 32 px sim recordings (the gate and evaluation tests).
TINY_GATE_POLICY = dict(image_width=32, image_height=32, batch_size=16, epochs=1, frame_stride=2, learning_rate=1e-3,
                        chunk_length=5, pretrained="none", annoy_trees=4)


def tiny_sim_policy(dataset_dir: Path, episodes: int = 3):
    """Record ``episodes`` scripted sim demonstrations at 32 px into ``dataset_dir`` and build an ALT policy on
    them with :data:`TINY_GATE_POLICY`."""
    from policy.config import PolicyConfig
    from policy.policy import ALTPolicy

    record_sim(dataset_dir, episodes, image_size=32)
    with Dataset.open(dataset_dir) as ds:
        return ALTPolicy.build(ds, PolicyConfig(**TINY_GATE_POLICY))


def connected_sim_rig(image_size: int = 32):
    """A connected simulated mug rig for a module fixture (``yield from``); disconnected and closed after."""
    rig = make_rig("sim", image_size=image_size)
    rig.connect()
    yield rig
    rig.disconnect()
    rig.close()


def reset_in_distribution(rig, seed: int = 3) -> None:
    """The operator's stop released, an in-distribution scene from ``seed``, the clock running: ready to run."""
    rig.arm.release()
    rig.scene_control().reset(seed, "in_distribution")
    rig.clock.start()
