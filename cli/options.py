"""What several verbs share: argument types, option blocks (rig, clock, sizes, policy settings, a LeRobot
source) with the frozen dataclasses they fill, and turning parsed arguments into a verb's config.

Light to import: ``main.py --help`` builds every parser from here."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from robot_drivers.factory import robot_names, split_robot


# --------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def robot_name(text: str) -> str:
    """``--robot``: a built-in robot, ``sim`` or ``metaworld:<task>`` (checked now, so that a typo or a missing
    task is named before anything is made or loaded; the task itself is checked when the rig is made)."""
    try:
        split_robot(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except ImportError as exc:  # listing a rig's parameters (its tasks) needs its simulator installed
        from robot_drivers.registry import lookup

        base = text.partition(":")[0]
        parameter = lookup("rig", base).option("parameter")
        raise argparse.ArgumentTypeError(f"robot {base!r} needs a {parameter}: give --robot {base}:<{parameter}> "
                                         f"(they could not be listed: {exc})") from None
    return text


def robot_help(default: str | None = "sim") -> str:
    """The help of a ``--robot`` option: the built-in robots by the names a user gives."""
    names = " or ".join(robot_names())
    return f"a built-in simulated rig: {names}" + (f" (default {default})" if default else "")


def from_args(cls, args: argparse.Namespace, **given):
    """``cls`` (a config dataclass) from the parsed arguments of the same names; lists become tuples (the
    configs are frozen); ``given`` fills fields the arguments do not hold as such."""
    values = {}
    for f in fields(cls):
        if f.name not in given:
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **given)


# --------------------------------------------------------------------------- option blocks
def add_actions(subparsers, verb: str, help: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A verb with actions (``dataset info``): its parser, and the subparsers to add the actions to (their name
    goes to ``VERB_verb``)."""
    p = subparsers.add_parser(verb, help=help)
    return p, p.add_subparsers(dest=f"{verb}_verb", metavar="ACTION", required=True)


class RenamedOption(argparse.Action):
    """Stores the value; given under the option's old name, says once on stderr which name to use now."""

    def __init__(self, option_strings, dest, old: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.old, self.new, self.noted = old, option_strings[0], False

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == self.old and not self.noted:
            self.noted = True
            print(f"note: {self.old} is deprecated here; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _size_option(p: argparse.ArgumentParser, name: str, help: str, default: int | None) -> None:
    p.add_argument(name, "--image-size", action=RenamedOption, old="--image-size", type=positive_int,
                   default=default, metavar="PX", help=f"{help}; --image-size is its deprecated old name")


def add_camera_size(p: argparse.ArgumentParser, help: str, default: int = 128) -> None:
    """``--camera-size PX``: the side of the (simulated) camera's square image (``--image-size`` still works)."""
    _size_option(p, "--camera-size", help, default)


def add_input_size(p: argparse.ArgumentParser, help: str = "encoder input side in pixels") -> None:
    """``--input-size PX``: the side of the encoder's square input (``--image-size`` still works)."""
    _size_option(p, "--input-size", help, None)


def add_rig_options(p: argparse.ArgumentParser) -> None:
    """``--robot`` and ``--rig FILE`` (main.py lets the rig file override the robot)."""
    p.add_argument("--robot", type=robot_name, default="sim", metavar="ROBOT", help=robot_help())
    p.add_argument("--rig", metavar="FILE", help="a real rig's config file (TOML, see configs/); overrides --robot")


def add_clock_option(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep",
                   help=help or "simulated rig: lock-step (fast, repeatable; the default) or real time (as the "
                                "app runs it)")


def add_rate_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=positive_float, default=None,
                   help="control rate in Hz (default: the rig file's rate_hz, or the simulated rig's own rate); "
                        "the per-tick step limits follow it")


def add_skip_damaged(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--skip-damaged", action="store_true", help=help)


def add_ledger_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", default=None, help="ledger file (default runs/trials.jsonl)")


# --------------------------------------------------------------------------- policy settings (train, eval-offline)
@dataclass(frozen=True)
class PolicyOptions:
    """The policy settings a verb may override on top of a preset (None: the preset's own)."""

    preset: str = "cpu"
    epochs: int | None = None
    batch_size: int | None = None
    input_size: int | None = None
    frame_stride: int | None = None
    chunk_length: int | None = None
    requery_every: int | None = None
    lr: float | None = None
    temperature: float | None = None
    seed: int | None = None
    pretrained: str | None = None
    pose: bool = False
    method: str | None = None
    false_stop_rate: float | None = None  # per run (conformal); None: the per-frame rule
    gate_persistence: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PolicyOptions":
        return from_args(cls, args)

    def policy_config(self):
        """The preset with these overrides (a ``policy.config.PolicyConfig``)."""
        from policy.config import PRESETS

        size = self.input_size
        return PRESETS[self.preset].with_overrides(
            epochs=self.epochs, batch_size=self.batch_size, frame_stride=self.frame_stride,
            chunk_length=self.chunk_length, seed=self.seed, learning_rate=self.lr, temperature=self.temperature,
            requery_every=self.requery_every, image_width=size, image_height=size, pretrained=self.pretrained,
            use_pose=True if self.pose else None, method=self.method, run_false_stop_rate=self.false_stop_rate,
            gate_persistence=self.gate_persistence)


def _run_rate(text: str) -> float:
    """A false-stop rate per run in (0, 1); checked before a long training run, not after it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a rate such as 0.05") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a rate in (0, 1); give e.g. 0.05 for 5% of runs")
    return value


def add_policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="cpu: sized for a 2-core CPU (default); paper: the authors' settings (GPU)")
    p.add_argument("--epochs", type=positive_int, help="encoder training epochs (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, help="contrastive batch size (default: the preset's)")
    add_input_size(p)
    p.add_argument("--frame-stride", type=positive_int, help="train on every n-th frame")
    p.add_argument("--chunk-length", type=positive_int, help="actions per retrieved chunk")
    p.add_argument("--requery-every", type=positive_int, help="ticks between retrievals at run time")
    p.add_argument("--lr", type=float, help="learning rate of the encoder (default: the preset's)")
    p.add_argument("--temperature", type=float, help="NT-Xent temperature (default: the preset's)")
    p.add_argument("--seed", type=int, help="training seed: same data and seed, same policy (default 0)")
    p.add_argument("--backbone-weights", "--pretrained", dest="pretrained", choices=("auto", "imagenet", "none"),
                   help="ResNet-18 initialisation: auto (ImageNet weights when torchvision's cache has them, else "
                        "random; the default), imagenet (download them if needed), none (random)")
    p.add_argument("--pose", action="store_true", help="add the end-effector pose branch")
    p.add_argument("--false-stop-rate", type=_run_rate, metavar="ALPHA",
                   help="the gate's false-stop rate per run, e.g. 0.05: gamma and the view thresholds are calibrated "
                        "conformally on held-out demonstrations (split conformal over whole demonstrations) so that a "
                        "run like them is stopped with probability at most ALPHA; at least ceil(1/ALPHA) - 1 "
                        "demonstrations are held out of encoder training for it (19 for 0.05). Default: the "
                        "per-frame rule (0.2%% of held-out frames), and the training summary states the run rate it "
                        "gives")
    p.add_argument("--gate-persistence", type=positive_int, metavar="N",
                   help="once the arm moves, a view signal (similarity, hand view, third view) stops a run after "
                        "failing N lookups in a row, unless the gripper holds what it grasped (default 3; 1: every "
                        "failing lookup stops; docs/method.md)")
    p.add_argument("--method", choices=("alt", "aligned", "landmarks"),
                   help="alt: replay the retrieved demonstration as recorded (the paper; default); aligned: find "
                        "the object in the third-person view and replay the demonstration shifted onto it; "
                        "landmarks: move each retrieved chunk with the things that stand elsewhere than in its "
                        "demonstration (docs/method.md)")


# --------------------------------------------------------------------------- a LeRobot source (train, eval-offline)
@dataclass(frozen=True)
class LerobotOptions:
    """``--lerobot PATH_OR_REPO_ID`` and the flags that only apply with it."""

    lerobot: str | None = None
    hand_key: str | None = None
    third_key: str | None = None
    action_key: str | None = None
    episodes: tuple[int, ...] | None = None
    lerobot_python: str | None = None
    import_dir: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LerobotOptions":
        return from_args(cls, args)

    def check(self, positional: str | None, shown: str) -> None:
        """Exactly one of the positional source and --lerobot; the LeRobot flags only with --lerobot."""
        if (positional is None) == (self.lerobot is None):
            raise ValueError(f"give either {shown} or --lerobot PATH_OR_REPO_ID")
        stray = [f"--{f.name.replace('_', '-')}" for f in fields(self)
                 if f.name != "lerobot" and getattr(self, f.name) is not None]
        if self.lerobot is None and stray:
            raise ValueError(f"{', '.join(stray)} only apply with --lerobot PATH_OR_REPO_ID")

    def import_source(self, progress: str) -> tuple[str, dict]:
        """Import the dataset through LeRobot's environment; returns (dataset folder, source info). ``progress``:
        "bars" (tqdm on stderr), "jsonl" (JSON lines on stdout) or "none"."""
        from lerobot_bridge.source import import_lerobot

        bars = []  # made at the first frame, so that an early error stays one line

        def report(done, total):
            if progress == "jsonl":
                print(json.dumps({"stage": "import", "done": done, "total": total}), flush=True)
            elif progress == "bars":
                if not bars:
                    from tqdm import tqdm

                    bars.append(tqdm(total=total, desc="import", unit="frame", file=sys.stderr))
                bars[0].n = done
                bars[0].refresh()

        path = import_lerobot(self.lerobot, hand_key=self.hand_key, third_key=self.third_key,
                              action_key=self.action_key, episodes=None if self.episodes is None else
                              list(self.episodes), out=self.import_dir, python=self.lerobot_python, progress=report)
        for bar in bars:
            bar.close()
        summary = json.loads((Path(path) / "lerobot_import.json").read_text())
        return str(path), {"lerobot": self.lerobot, "imported_to": str(Path(path).resolve()), **summary["summary"]}


def add_lerobot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lerobot", metavar="PATH_OR_REPO_ID",
                   help="a LeRobotDataset v3.0: a local folder, or a Hugging Face Hub repo id (needs internet)")
    p.add_argument("--hand-key", help="LeRobot camera key for the wrist view ('none': no wrist view; default: "
                                      "the camera named wrist/hand/gripper)")
    p.add_argument("--third-key", help="LeRobot camera key for the third-person view ('none': none; default: the "
                                       "other camera)")
    p.add_argument("--action-key", help="LeRobot feature holding the actions (default: action)")
    p.add_argument("--episodes", type=int, nargs="+", help="LeRobot episode indices to use (default: all)")
    p.add_argument("--lerobot-python", help="python of LeRobot's environment (default: $ALT_LEROBOT_PYTHON, "
                                            "else .venv-lerobot/bin/python, built by scripts/lerobot_env.sh)")
    p.add_argument("--import-dir", help="where the imported copy goes (default: data/lerobot/NAME-HASH; reused)")
