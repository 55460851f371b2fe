#!/usr/bin/env python3
"""ALT Studio command line. `python main.py --help` lists the verbs."""

from __future__ import annotations

import argparse
import logging
import sys

# Light imports (no simulator, no torch): needed for the --help choices.
from robot_drivers.factory import ROBOTS, TELEOPS
from robot_drivers.sim.task import SCENARIOS


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _gamma(text: str) -> str:
    """'auto' or a cosine similarity; checked before a long training run, not after it."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor a number") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a similarity in [-1, 1]")
    return text




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="ALT Studio: record demonstrations, train an Action Lookup Table policy, supervise the arm.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("sim-check", help="run the scripted expert on the simulated rig and time it",
                         description="Runs the scripted expert in lock-step on the simulated rig and prints the "
                                     "success rate and the per-tick physics and render time.")
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes per scenario (default 10)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="in_distribution",
                   help="mug placement scenario (default in_distribution)")
    p.add_argument("--image-size", type=_positive_int, default=128, help="camera image side in pixels (default 128)")
    p.add_argument("--no-cameras", action="store_true", help="skip rendering (physics only)")
    p.add_argument("--min-success", type=float, default=0.0,
                   help="exit with status 1 if any scenario's success rate is below this fraction")
    p.set_defaults(func=_lazy("robot_drivers.sim.check", "cmd_sim_check"))

    p = verbs.add_parser("record", help="record demonstrations into a dataset",
                         description="Records demonstrations. With --teleop scripted on the simulated rig the "
                                     "scripted operator demonstrates at the training placements in lock-step; with "
                                     "a teleop device the operator presses start/stop on it. Recording into an "
                                     "existing dataset appends (settings must match).")
    p.add_argument("--robot", choices=ROBOTS, default="sim")
    p.add_argument("--rig", metavar="FILE", help="a real rig's config file (TOML, see configs/); overrides --robot")
    p.add_argument("--teleop", choices=TELEOPS, default="scripted",
                   help="scripted (sim), config (the rig file's [teleop]; the default with --rig), spacemouse, gamepad")
    p.add_argument("--episodes", type=_positive_int, default=30, help="episodes to keep (default 30)")
    p.add_argument("--out", required=True,
                   help="dataset folder (created, or appended to; a policy, a LeRobot export, a folder of other "
                        "files, '.' or the project folder is refused before the rig connects)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default="grasp the mug", help="task text stored with each episode")
    p.add_argument("--rate", type=_positive_float, default=None,
                   help="control rate in Hz (default: the rig file's rate_hz, 10 for the sim); the per-tick step "
                        "limits follow it")
    p.add_argument("--image-size", type=_positive_int, default=128, help="camera image side in pixels")
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep",
                   help="sim only: lock-step (fast, repeatable) or real time")
    p.add_argument("--codec", choices=("jpeg", "png"), default="jpeg", help="image codec (png is lossless)")
    p.set_defaults(func=_lazy("recorder.commands", "cmd_record"))

    p = verbs.add_parser("dataset", help="inspect or edit a dataset")
    dverbs = p.add_subparsers(dest="dataset_verb", metavar="ACTION", required=True)
    q = dverbs.add_parser("info", help="episodes, sizes, timing health and an integrity check (exit 1 when damaged)",
                          description="Lists the episodes and checks them: every file's size and checksum against "
                                      "what was recorded when the episode was kept, the step arrays, the first "
                                      "frame of each camera, and episodes whose folder is missing. Says 'healthy' "
                                      "only when nothing is found; otherwise names each damaged episode and file "
                                      "and exits with status 1 (2 when the dataset cannot be opened at all).")
    q.add_argument("dir")
    q.add_argument("--full", action="store_true", help="also decode every frame (reads and decodes everything)")
    q.set_defaults(func=_lazy("recorder.commands", "cmd_dataset_info"))
    q = dverbs.add_parser("delete", help="delete an episode (or the interrupted ones)",
                          description="Deletes an episode for good (its index is never given out again), or the "
                                      "folders of recordings that never finished (--interrupted). Naming an "
                                      "episode whose folder is missing makes the dataset stop expecting it. Works "
                                      "on a full disk.")
    q.add_argument("dir")
    q.add_argument("episode", type=int, nargs="?")
    q.add_argument("--interrupted", action="store_true", help="remove episodes whose recording never finished")
    q.set_defaults(func=_lazy("recorder.commands", "cmd_dataset_delete"))

    p = verbs.add_parser("export", help="convert a dataset to another format (LeRobotDataset v3.0)")
    p.add_argument("dir")
    p.add_argument("--format", choices=("lerobot",), default="lerobot")
    p.add_argument("--out", required=True, help="folder to create (must not exist or be empty; see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing LeRobot export at --out (atomically)")
    p.add_argument("--episodes", type=int, nargs="+", help="source episode indices (default: all)")
    p.add_argument("--codec", default=None, help="video encoder (default: libsvtav1, else libx264, else mpeg4; "
                   "`lossless`: H.264 in RGB at quantiser 0, every pixel as recorded)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="also export episodes whose control rate was not held (timestamps will have gaps)")
    p.add_argument("--skip-damaged", action="store_true",
                   help="leave out episodes that fail the integrity check, listing them (default: refuse, naming them)")
    p.set_defaults(func=_lazy("recorder.commands", "cmd_export"))

    p = verbs.add_parser("replay", help="drive the arm through a recorded episode")
    p.add_argument("dir")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("--robot", choices=ROBOTS, default="sim")
    p.add_argument("--rig", metavar="FILE", help="a real rig's config file (TOML, see configs/); overrides --robot")
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep")
    p.set_defaults(func=_lazy("recorder.commands", "cmd_replay"))

    p = verbs.add_parser("devices", help="list connected cameras and the arms of a rig file",
                         description="Lists the RealSense cameras (serial, model, firmware, USB type) and V4L2 "
                                     "video devices that are plugged in, and with --rig the arm, cameras and "
                                     "teleop device the rig file names. --ping checks that the arm answers.")
    p.add_argument("--rig", metavar="FILE", help="rig config file to show")
    p.add_argument("--ping", action="store_true", help="open a TCP connection to the arm (short timeout)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for the arm with --ping (default 1)")
    p.set_defaults(func=_lazy("robot_drivers.devices", "cmd_devices"))

    p = verbs.add_parser("train", help="train an ALT policy on a dataset",
                         description="Trains the contrastive encoder, embeds every frame into the lookup database, "
                                     "builds the annoy index and calibrates the OOD threshold gamma. The result is "
                                     "one policy folder. With --lerobot it trains on a LeRobotDataset v3.0, read "
                                     "through LeRobot's own loader in LeRobot's environment.")
    p.add_argument("dataset", nargs="?", help="an ALT Studio dataset folder (or use --lerobot)")
    p.add_argument("--out", required=True, help="policy folder to write")
    _lerobot_options(p)
    _policy_options(p)
    p.add_argument("--gamma", type=_gamma, default="auto",
                   help="OOD threshold: 'auto' (calibrated from the data, default) or a similarity in [-1, 1]")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing policy folder (atomically)")
    p.add_argument("--skip-damaged", action="store_true",
                   help="train on the undamaged episodes when some fail the integrity check (default: refuse)")
    p.add_argument("--progress", choices=("bars", "jsonl", "none"), default="bars",
                   help="progress as bars on stderr (default), JSON lines on stdout (machine-readable), or none")
    p.set_defaults(func=_lazy("policy.commands", "cmd_train"))

    p = verbs.add_parser("eval", help="evaluate a policy on the simulated rig")
    p.add_argument("policy")
    p.add_argument("--robot", choices=("sim",), default="sim")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="in_distribution")
    p.add_argument("--episodes", type=_positive_int, default=31)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep")
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--check-data", default=None, metavar="DATASET",
                   help="demonstrations NOT used for the policy (e.g. `record --out data/check --seed 9001`): "
                        "report how many of their frames the gate flags")
    p.set_defaults(func=_lazy("policy.commands", "cmd_eval"))

    p = verbs.add_parser("eval-offline", help="leave-episodes-out evaluation of retrieval on recorded data",
                         description="For each held-out episode and frame, retrieves from the other episodes and "
                                     "compares the retrieved action chunk with what the operator did next (error per "
                                     "horizon step, in the dataset's units), next to baselines that ignore the "
                                     "images; plus how many held-out frames the OOD gate would stop. Given a policy, "
                                     "its encoder is reused and only the lookup table changes per fold (fast; the "
                                     "encoder saw the held-out episodes); given a dataset, or with --retrain, the "
                                     "encoder is retrained per fold without them.")
    p.add_argument("source", metavar="POLICY_OR_DATASET", nargs="?",
                   help="a policy folder, an ALT Studio dataset folder (or use --lerobot)")
    p.add_argument("--folds", type=_positive_int, default=5, help="folds over episodes (default 5)")
    p.add_argument("--retrain", action="store_true", help="retrain the encoder per fold (a policy's settings)")
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--device", default=None, help="torch device for retraining (default: cuda if available)")
    _lerobot_options(p)
    _policy_options(p)
    p.add_argument("--progress", choices=("bars", "none"), default="bars",
                   help="progress of a --lerobot import as bars on stderr (default) or none")
    p.set_defaults(func=_lazy("evaluation.offline_eval", "cmd_eval_offline"))

    p = verbs.add_parser("ood", help="the OOD gate's verdict for arbitrary images, and the signal that decided it")
    p.add_argument("policy")
    p.add_argument("images", nargs="+")
    p.add_argument("--view", choices=("both", "hand", "third"), default="both",
                   help="feed each image as both views (default) or as one view, the other being a recorded "
                        "frame of the policy's demonstrations")
    p.set_defaults(func=_lazy("policy.commands", "cmd_ood"))

    p = verbs.add_parser("gui", help="the desktop app (the default when no verb is given)",
                         description="Opens ALT Studio's window: rig panel with live previews and keyboard "
                                     "teleop, Record, Train and Autonomous tabs. The simulated rig (real time) "
                                     "unless --rig names a rig file.")
    _gui_options(p)
    p.set_defaults(func=_lazy("gui.app", "cmd_gui"))

    p = verbs.add_parser("demo", help="the main job: record 30 sim demos, train, evaluate every scenario",
                         description="Records 30 scripted demonstrations on the simulated rig, trains the ALT "
                                     "policy, builds the aligned method on the same encoder, evaluates both in every "
                                     "scenario and prints their tables side by side, then runs the correction loop. "
                                     "About 30 minutes on 2 CPU cores; --quick takes about 8.")
    p.add_argument("--out", default="runs/demo", help="folder for the dataset, policy and report")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs, training frames and evaluation episodes (5): a smoke run")
    p.add_argument("--episodes", type=_positive_int, default=31, help="evaluation episodes per scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrections", action="store_true",
                   help="only the correction loop (after recording and training, reused when already in --out): "
                        "the policy on --episodes interpolate placements, the scripted operator correcting each "
                        "stop, the corrections added at once, then --episodes other placements")
    p.add_argument("--method", choices=("alt", "aligned"), default="alt",
                   help="with --corrections: the policy method the loop runs (both share the trained encoder)")
    p.add_argument("--scenario", default="interpolate", choices=("interpolate", "extrapolate", "distractors",
                                                                  "lighting", "in_distribution"),
                   help="with --corrections: where the placements of both sets come from")
    p.set_defaults(func=_lazy("policy.commands", "cmd_demo"))
    _corrections_verbs(verbs)
    return parser


def _episode_tokens(text: str) -> str:
    """An episode index or a range like 30-35 (expanded by policy.versions.parse_episode_list)."""
    if not all(part.strip().isdigit() for chunk in text.split(",") if chunk for part in chunk.split("-", 1)):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an episode index nor a range like 30-35")
    return text


def _corrections_verbs(verbs) -> None:
    """Corrections, coverage and trials: `policy add`, `trials`, `coverage`."""
    p = verbs.add_parser("policy", help="manage policy versions (add corrections without retraining)")
    pverbs = p.add_subparsers(dest="policy_verb", metavar="ACTION", required=True)
    q = pverbs.add_parser("add", help="add episodes (corrections) to a policy as a new version, no retraining",
                          description="Embeds the episodes' frames with the policy's current encoder, appends them "
                                      "to its lookup table, rebuilds the index and writes a NEW policy folder "
                                      "(version + 1); the parent is left as it was. gamma is kept unless "
                                      "--recalibrate.")
    q.add_argument("policy", help="the parent policy folder")
    q.add_argument("dataset", help="the dataset the policy was built from, holding the new episodes")
    q.add_argument("--episodes", nargs="+", required=True, type=_episode_tokens, metavar="E",
                   help="episode indices or ranges, e.g. 31 32 or 30-35")
    q.add_argument("--out", default=None, help="new policy folder (default: beside the parent, NAME-vVERSION)")
    q.add_argument("--recalibrate", action="store_true", help="choose gamma again from the extended table")
    q.add_argument("--include-incomplete", action="store_true",
                   help="also add episodes that did not end with the stop button")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out policy folder (atomically)")
    q.add_argument("--skip-damaged", action="store_true",
                   help="add the undamaged episodes when some fail the integrity check (default: refuse)")
    q.set_defaults(func=_lazy("policy.corrections_commands", "cmd_policy_add"))

    p = verbs.add_parser("trials", help="success rate per policy version from the trial ledger",
                         description="Reads the trial ledger (every autonomous run: policy version, method, gamma, "
                                     "times, outcome, reason) and prints counts and the success rate with a Wilson "
                                     "95%% interval per policy version, then the trials the operator marked and "
                                     "those awaiting a mark (a real rig has no task check).")
    p.add_argument("--ledger", default=None, help="ledger file (default runs/trials.jsonl)")
    p.add_argument("--policy", default=None, help="only trials of this policy folder")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write one row per trial to FILE")
    p.add_argument("--mark", nargs=2, default=None, metavar=("TRIAL_ID", "{success,failure}"),
                   help="first record the operator's verdict on an ended trial (replaces an earlier mark; the "
                        "automatic outcome stays recorded)")
    p.set_defaults(func=_lazy("policy.corrections_commands", "cmd_trials"))

    p = verbs.add_parser("coverage", help="draw the policy's coverage map (embeddings, runs, OOD stops) as a PNG",
                         description="Projects the lookup table's embeddings to 2-D (PCA), draws demonstrations and "
                                     "corrections, the latest runs' trajectories and every OOD stop from the trial "
                                     "ledger, and lists the stops not yet covered (record here next).")
    p.add_argument("policy")
    p.add_argument("--ledger", default=None, help="ledger file (default runs/trials.jsonl)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--trajectories", type=_positive_int, default=5, help="latest run trajectories to draw (default 5)")
    p.set_defaults(func=_lazy("policy.corrections_commands", "cmd_coverage"))


def _gui_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rig", metavar="FILE", help="rig config (TOML); default: the simulated rig")
    p.add_argument("--image-size", type=_positive_int, default=128, help="sim camera side in pixels (default 128)")
    p.add_argument("--rate", type=_positive_float, default=None,
                   help="control rate in Hz (default: the rig file's rate_hz, 10 for the sim); the per-tick "
                        "step limits follow it")
    p.add_argument("--data-dir", default="data", help="where datasets go (default data/)")
    p.add_argument("--runs-dir", default="runs", help="where policies go and are looked for (default runs/)")
    p.add_argument("--task", default="grasp the mug", help="task description stored with each episode")
    p.add_argument("--no-connect", action="store_true", help="open the window without connecting the rig")


def _policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                   help="cpu: sized for a 2-core CPU (default); paper: the authors' settings (GPU)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--image-size", type=_positive_int, help="encoder input side in pixels")
    p.add_argument("--frame-stride", type=_positive_int, help="train on every n-th frame")
    p.add_argument("--chunk-length", type=_positive_int, help="actions per retrieved chunk")
    p.add_argument("--requery-every", type=_positive_int, help="ticks between retrievals at run time")
    p.add_argument("--lr", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--backbone-weights", "--pretrained", dest="pretrained", choices=("auto", "imagenet", "none"),
                   help="ResNet-18 initialisation: auto (ImageNet weights when torchvision's cache has them, else "
                        "random; the default), imagenet (download them if needed), none (random)")
    p.add_argument("--pose", action="store_true", help="add the end-effector pose branch")
    p.add_argument("--method", choices=("alt", "aligned"),
                   help="alt: replay the retrieved demonstration as recorded (the paper; default); aligned: find "
                        "the object in the third-person view and replay the demonstration shifted onto it")


def _lerobot_options(p: argparse.ArgumentParser) -> None:
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


def _lazy(module: str, name: str):
    """Import a verb's implementation only when it runs, so --help stays fast."""

    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not [a for a in argv if not a.startswith("-")] and not {"-h", "--help"} & set(argv):
        argv = [*argv, "gui"]  # no verb: open the app
    args = build_parser().parse_args(argv)
    if getattr(args, "rig", None) and hasattr(args, "robot"):  # --rig FILE overrides --robot
        args.robot = args.rig
        if getattr(args, "teleop", None) == "scripted":
            args.teleop = "config"  # the scripted operator needs the simulator: use the rig file's device
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from recorder.dataset import DatasetError
    from core.errors import DeviceError

    known = (DeviceError, DatasetError, ValueError, OSError)
    if args.verb == "export":
        from lerobot_bridge.export import ExportError

        known = known + (ExportError,)
    if args.verb in ("train", "eval", "ood", "demo", "eval-offline"):
        from policy.artifact import PolicyArtifactError
        from policy.train import TrainingCancelled

        known = known + (PolicyArtifactError, TrainingCancelled)
    if args.verb in ("policy", "trials", "coverage"):
        from policy.artifact import PolicyArtifactError
        from evaluation.trials import LedgerError

        known = known + (PolicyArtifactError, LedgerError)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except known as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
