"""The command line's shape: one cli/ module per verb (a frozen config, add_parser, config_from_args, run), a
main.py light enough for --help, the --image-size alias, and verbs that call shared functions, never each other's
argument parsing."""

import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import main
from cli import VERBS

ROOT = Path(__file__).resolve().parents[1]

# Each verb's smallest command line, and the config it must give (so the dataclass defaults are the parser's).
MINIMAL = {
    "sim_check": (["sim-check"], lambda m: m.SimCheckConfig()),
    "record": (["record", "--out", "ds"], lambda m: m.RecordConfig(out="ds")),
    "dataset": (["dataset", "info", "ds"], lambda m: m.DatasetInfoConfig(dir="ds")),
    "export": (["export", "ds", "--out", "o"], lambda m: m.ExportConfig(dir="ds", out="o")),
    "replay": (["replay", "ds", "--episode", "0"], lambda m: m.ReplayConfig(dir="ds", episode=0)),
    "devices": (["devices"], lambda m: m.DevicesConfig()),
    "train": (["train", "ds", "--out", "p"], lambda m: m.TrainConfig(out="p", dataset="ds")),
    "eval": (["eval", "p"], lambda m: m.EvalConfig(policy="p")),
    "eval_offline": (["eval-offline", "p"], lambda m: m.EvalOfflineConfig(source="p")),
    "ood": (["ood", "p", "a.png"], lambda m: m.OodConfig(policy="p", images=("a.png",))),
    "gui": (["gui"], lambda m: m.GuiConfig()),
    "demo": (["demo"], lambda m: m.DemoConfig()),
    "policy_add": (["policy", "add", "p", "ds", "--episodes", "3"],
                   lambda m: m.PolicyAddConfig(policy="p", dataset="ds", episodes=("3",))),
    "trials": (["trials"], lambda m: m.TrialsConfig()),
    "coverage": (["coverage", "p", "--out", "m.png"], lambda m: m.CoverageConfig(policy="p", out="m.png")),
}


def _configs(module) -> list[type]:
    return [obj for obj in vars(module).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)
            and obj.__module__ == module.__name__ and obj.__name__.endswith("Config")]


@pytest.mark.parametrize("name", VERBS)
def test_every_verb_module_has_a_frozen_config_add_parser_and_run(name):
    module = importlib.import_module(f"cli.{name}")
    for function in ("add_parser", "config_from_args", "run"):
        assert callable(getattr(module, function, None)), f"cli/{name}.py has no {function}()"
    configs = _configs(module)
    assert configs and all(c.__dataclass_params__.frozen for c in configs), f"cli/{name}.py: {configs}"
    argv, expected = MINIMAL[name]
    args = main.build_parser().parse_args(argv)
    assert args.command == module.__name__
    config = module.config_from_args(args)
    assert type(config) in configs and config == expected(module)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, dataclasses.fields(config)[0].name, None)


def test_the_verbs_are_the_modules():
    assert sorted(MINIMAL) == sorted(VERBS)
    assert sorted(VERBS) == sorted(p.stem for p in (ROOT / "cli").glob("*.py") if p.stem not in ("__init__", "options"))
    args = main.build_parser().parse_args(["dataset", "delete", "ds", "3", "--interrupted"])
    from cli.dataset import DatasetDeleteConfig, config_from_args

    assert config_from_args(args) == DatasetDeleteConfig(dir="ds", episode=3, interrupted=True)


HELP_SCRIPT = """
import contextlib, io, sys
import main
heavy = [m for m in ("torch", "pybullet") if m in sys.modules]
assert not heavy, f"import main loaded {heavy}"
for argv in ([], ["sim-check"], ["record"], ["dataset"], ["dataset", "info"], ["dataset", "delete"], ["export"],
             ["replay"], ["devices"], ["train"], ["eval"], ["eval-offline"], ["ood"], ["gui"], ["demo"], ["policy"],
             ["policy", "add"], ["trials"], ["coverage"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main.main([*argv, "--help"])
            code = None
        except SystemExit as exc:
            code = exc.code
    assert code == 0 and out.getvalue().startswith("usage: main.py " + " ".join(argv)), (argv, code, out.getvalue())
heavy = [m for m in ("torch", "pybullet") if m in sys.modules]
assert not heavy, f"--help loaded {heavy}"
print("ok")
"""


def test_help_of_every_verb_works_without_torch_or_the_simulator():
    out = subprocess.run([sys.executable, "-c", HELP_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


ALIASES = [(["record", "--out", "ds"], "--camera-size", lambda c: c.camera_size),
           (["gui"], "--camera-size", lambda c: c.camera_size),
           (["sim-check"], "--camera-size", lambda c: c.camera_size),
           (["train", "ds", "--out", "p"], "--input-size", lambda c: c.policy.input_size),
           (["eval-offline", "p"], "--input-size", lambda c: c.policy.input_size)]


@pytest.mark.parametrize("argv,new,size", ALIASES, ids=[f"{a[0]} {n}" for a, n, _ in ALIASES])
def test_image_size_is_a_deprecated_alias_of_the_new_name(capsys, argv, new, size):
    def config(*extra):
        args = main.build_parser().parse_args([*argv, *extra])
        return importlib.import_module(args.command).config_from_args(args)

    by_new = config(new, "48")
    assert capsys.readouterr().err == ""
    by_old = config("--image-size", "48")
    assert capsys.readouterr().err == f"note: --image-size is deprecated here; use {new}\n"
    assert by_old == by_new and size(by_new) == 48


def test_the_alias_gives_the_same_result_on_the_command_line():
    def run(*args):
        return subprocess.run([sys.executable, "main.py", "sim-check", "--episodes", "1", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    new, old = run("--camera-size", "8"), run("--image-size", "8")
    assert new.returncode == old.returncode == 2 and "Traceback" not in old.stderr
    assert old.stderr.splitlines()[0] == "note: --image-size is deprecated here; use --camera-size"
    assert [ln for ln in old.stderr.splitlines() if ln.startswith("error:")] == \
        [ln for ln in new.stderr.splitlines() if ln.startswith("error:")] != []


LIBRARY = ("core", "evaluation", "gui", "lerobot_bridge", "policy", "recorder", "robot_drivers", "supervisor")


def test_no_verb_builds_an_argparse_namespace():
    """Verbs call shared functions (demo records through recorder.recording), never another verb's parsing."""
    library = [p for package in LIBRARY for p in (ROOT / package).rglob("*.py")]
    code = [ROOT / "main.py", *(ROOT / "cli").glob("*.py"), *library, *(ROOT / "benchmarks").glob("*.py"),
            *(ROOT / "scripts").glob("*.py")]
    built = [str(p.relative_to(ROOT)) for p in code if re.search(r"(?<![A-Za-z_])Namespace\(", p.read_text())]
    assert built == []
    uses_cli = [str(p.relative_to(ROOT)) for p in library if re.search(r"^\s*(from|import) cli\b", p.read_text(), re.M)]
    assert uses_cli == [], "the library must not depend on the command line"


def test_demo_records_through_the_shared_function(tmp_path, monkeypatch):
    import evaluation.demo

    calls = []
    monkeypatch.setattr(evaluation.demo, "record_scripted", lambda *a, **kw: calls.append((a, kw)) or False)
    assert main.main(["demo", "--out", str(tmp_path), "--seed", "4"]) == 1  # the recording "failed": stop there
    assert calls == [((tmp_path / "dataset", 30, 128, 4), {"robot": "sim"})]


def test_record_verb_and_scripted_recording_share_one_loop(tmp_path, monkeypatch):
    import recorder.recording

    calls = []
    monkeypatch.setattr(recorder.recording, "record_episodes", lambda out, **kw: calls.append((out, kw)) or 0)
    assert main.main(["record", "--out", "ds", "--episodes", "2", "--camera-size", "48", "--seed", "3"]) == 0
    assert recorder.recording.record_scripted(tmp_path / "ds", 5, 64, 7)
    assert recorder.recording.record_scripted(tmp_path / "ds", 5, 64, 7, robot="metaworld:reach-v3")
    # task None: the rig's own task name; rate None: the rig's own rate
    assert calls == [("ds", dict(robot="sim", teleop="scripted", episodes=2, seed=3, task=None, rate=None,
                                 camera_size=48, clock="lockstep", codec="jpeg")),
                     (str(tmp_path / "ds"), dict(robot="sim", episodes=5, seed=7, rate=None, camera_size=64)),
                     (str(tmp_path / "ds"), dict(robot="metaworld:reach-v3", episodes=5, seed=7, rate=None,
                                                 camera_size=64))]


@pytest.mark.parametrize("verb", [["record", "--out", "ds"], ["replay", "ds", "--episode", "0"], ["eval", "p"],
                                  ["sim-check"], ["demo"]])
@pytest.mark.parametrize("robot,message", [
    ("metaworld", "argument --robot: robot 'metaworld' needs a task: give --robot metaworld:<task>"),
    ("nosuch", "argument --robot: unknown robot 'nosuch': the built-in robots are sim, metaworld:<task>"),
    ("sim:fast", "argument --robot: robot 'sim' takes no parameter; give --robot sim"),
])
def test_a_robot_that_is_not_a_built_in_one_is_named_before_anything_runs(capsys, verb, robot, message):
    with pytest.raises(SystemExit) as exit_:
        main.build_parser().parse_args([*verb, "--robot", robot])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_robot_names_are_parsed_as_given():
    for argv, robot in ((["eval", "p"], None), (["eval", "p", "--robot", "metaworld:pick-place-v3"],
                                                "metaworld:pick-place-v3"),
                        (["record", "--out", "ds", "--robot", "metaworld:pick-place-v3"], "metaworld:pick-place-v3"),
                        (["sim-check", "--robot", "sim"], "sim")):
        assert main.build_parser().parse_args(argv).robot == robot


def test_scenarios_are_the_rigs_own_and_all_means_every_one():
    from evaluation.scenes import pick_scenario, pick_scenarios

    valid = ("in_distribution", "interpolate", "lighting")
    assert pick_scenarios(valid, "all") == list(valid)
    assert pick_scenarios(valid, ["lighting", "all"]) == ["lighting", "in_distribution", "interpolate"]
    with pytest.raises(ValueError, match=r"unknown scenario 'distractors': this rig's scenarios are in_distribution, "
                                         r"interpolate, lighting \(or all: every one in turn\)"):
        pick_scenarios(valid, "distractors")
    with pytest.raises(ValueError, match="did you mean 'lighting'"):
        pick_scenarios(valid, "lightning")
    assert pick_scenario(valid, "interpolate") == "interpolate"
    with pytest.raises(ValueError, match="runs on one scenario, not all"):
        pick_scenario(valid, "all", "the correction loop")


def test_every_option_of_every_verb_says_what_it_does():
    """`main.py VERB --help` explains every argument (a bare `--seed SEED` leaves the operator guessing)."""
    import argparse

    from main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in verbs.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = [(f"{name} {n}", p) for a in nested for n, p in a.choices.items()] or [(name, sub)]
        for label, p in parsers:
            for action in p._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                if not action.help or action.help == argparse.SUPPRESS:
                    missing.append(f"{label}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == [], "arguments without help text: " + ", ".join(missing)


def test_a_scripted_recording_goes_on_past_a_placement_its_operator_cannot_do(tmp_path, monkeypatch, capsys):
    """A scripted operator that fails one training placement (as Meta-World's door expert fails some through the
    rig's driver) is tried there SCRIPTED_TRIES times, then the recording goes on with the next placement
    instead of trying the same one until it gives up."""
    import recorder.recording
    from recorder.dataset import Dataset
    from robot_drivers.metaworld.scene_control import MetaWorldSceneControl

    real = MetaWorldSceneControl.task_succeeded
    monkeypatch.setattr(MetaWorldSceneControl, "task_succeeded",
                        lambda self: real(self) and (self.record() or {}).get("training_index") != 1)
    assert recorder.recording.record_scripted(tmp_path / "ds", 3, 32, 0, robot="metaworld:reach-v3")
    assert f"training placement 1 in {recorder.recording.SCRIPTED_TRIES} tries" in capsys.readouterr().err
    with Dataset.open(tmp_path / "ds") as ds:
        kept = [ds.episode(e).extra["scene"]["training_index"] for e in ds.episode_indices()]
    assert kept == [0, 2, 3]
