"""`replay`: drive the arm through a recorded episode."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cli.options import add_clock_option, add_rig_options, from_args


@dataclass(frozen=True)
class ReplayConfig:
    dir: str
    episode: int
    robot: str = "sim"  # a robot name or a rig file (main.py puts --rig here)
    clock: str = "lockstep"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("replay", help="drive the arm through a recorded episode")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--episode", type=int, required=True, help="index of the episode to replay on the arm")
    add_rig_options(p)
    add_clock_option(p)
    return p


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    return from_args(ReplayConfig, args)


def run(config: ReplayConfig) -> int:
    from robot_drivers.factory import is_builtin_robot, make_rig

    from evaluation.scenes import scene_robot
    from recorder.dataset import Dataset
    from recorder.replay import replay_episode, restore_scene

    with Dataset.open(config.dir) as dataset:
        info = dataset.episode(config.episode)
        scene = info.extra.get("scene")
        if scene and is_builtin_robot(config.robot) and scene_robot(scene) != config.robot:
            raise ValueError(f"episode {config.episode} was recorded on --robot {scene_robot(scene)}; its scene "
                             f"and actions belong to that rig: replay it with --robot {scene_robot(scene)}, not "
                             f"--robot {config.robot}")
        rig = make_rig(config.robot, clock=config.clock, image_size=dataset.spec.cameras[0].width,
                       rate_hz=dataset.spec.fps)
        with rig:
            restore_scene(rig, info)
            result = replay_episode(rig, dataset, config.episode)
            print(f"replayed episode {config.episode}: {result.ticks} ticks, ended by {result.reason}")
            control = rig.scene_control()
            if control is not None:
                print(f"task success: {control.task_succeeded()}")
        rig.close()
    return 0 if result.ok else 2
