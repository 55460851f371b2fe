"""Train on a LeRobotDataset (v3.0): find LeRobot's environment, map the dataset's keys, import it.

LeRobot cannot share this project's environment: LeRobot 0.4.4 pins torch < 2.11 while this project runs
torch 2.14.1 (the only torch its machines can install), and forcing one into the other's environment breaks
either LeRobot's resolver or our torch. So LeRobot lives in its own virtualenv (``.venv-lerobot``, built by
``scripts/lerobot_env.sh``, the same recipe CI's loader check uses) and this module runs
``lerobot_bridge/reader.py`` with that environment's python. The reader opens the dataset with LeRobot's own
``LeRobotDataset`` (a local folder, or a Hub repo id when online) and writes the frames LeRobot's loader
returns, bit for bit (PNG), with the actions, states and episode boundaries into this project's dataset format
(docs/dataset_format.md). Training and offline evaluation then take the normal path, and the imported copy is
kept as a cache next to the other datasets.

Nothing here imports torch or LeRobot: the key mapping below is shared by both environments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from recorder.outputs import DATASET, check_output

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where `scripts/lerobot_env.sh` builds LeRobot's virtualenv.
DEFAULT_ENV = REPO_ROOT / ".venv-lerobot"
#: Names a python that has LeRobot (0.4, codebase v3.0) installed; overrides DEFAULT_ENV.
PYTHON_ENV_VAR = "ALT_LEROBOT_PYTHON"
SETUP_HINT = f"run scripts/lerobot_env.sh (builds {DEFAULT_ENV.name}/) or set {PYTHON_ENV_VAR} to a python with lerobot 0.4"
#: Key fragments that mark a wrist ("hand") camera in LeRobot's robots (so100 "wrist", aloha "cam_left_wrist",
#: koch "gripper", our own export "hand").
HAND_HINTS = ("wrist", "hand", "gripper", "eye_in_hand")
ROLES = ("hand", "third")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Frames are stored at most this large (long side, pixels): the paper's 320x240 encoder input fits.
MAX_SIDE = 320


class LeRobotSourceError(ValueError):
    """The LeRobot dataset, its keys or LeRobot's environment are not usable; the message says how to fix it."""


# --------------------------------------------------------------------------- the environment
def lerobot_python(explicit: str | None = None) -> str:
    """The python of LeRobot's environment: --lerobot-python, then $ALT_LEROBOT_PYTHON, then .venv-lerobot."""
    candidate = explicit or os.environ.get(PYTHON_ENV_VAR) or str(DEFAULT_ENV / "bin" / "python")
    if not Path(candidate).is_file() or not os.access(candidate, os.X_OK):
        raise LeRobotSourceError(f"LeRobot's environment is not set up ({candidate} is missing); {SETUP_HINT}")
    return candidate


# --------------------------------------------------------------------------- the source
def is_local(source: str) -> bool:
    """A folder on disk (existing, or written like a path) rather than a Hub repo id ("owner/name")."""
    return Path(source).expanduser().exists() or not REPO_ID.match(source)


def read_info(root: Path) -> dict:
    """meta/info.json of a local LeRobotDataset v3.0; a clear error for anything else."""
    if not root.is_dir():
        raise LeRobotSourceError(f"no LeRobot dataset at {root}: the folder does not exist (a Hub dataset is "
                                 "named owner/name)")
    path = root / "meta" / "info.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotSourceError(f"{root} is not a LeRobotDataset: {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise LeRobotSourceError(f"{path} is unreadable ({exc})") from None
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3."):
        raise LeRobotSourceError(f"{root} is a LeRobotDataset {version}; ALT Studio reads v3.0: convert it with "
                                 "LeRobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`")
    return info


def camera_keys(features: dict) -> list[str]:
    return [k for k, f in features.items() if f.get("dtype") in ("video", "image")]


def resolve_keys(features: dict, hand_key: str | None = None, third_key: str | None = None,
                 action_key: str | None = None) -> dict:
    """Map camera keys to the roles "hand" and "third" and pick the action (and state) key.

    An explicit key must exist; ``"none"`` leaves a role out. Roles not given are inferred: a camera whose key
    names a wrist / hand / gripper is the hand camera, the one remaining other camera the third-person one. When
    that is ambiguous the error lists the cameras and the flags to pass. Returns
    {"cameras": {role: key}, "action": key, "state": key or None}.
    """
    cams = camera_keys(features)
    listing = ", ".join(cams) if cams else "none"
    if not cams:
        raise LeRobotSourceError("the dataset has no camera (no feature of dtype video or image); ALT needs one")
    chosen: dict[str, str] = {}
    for role, key, flag in (("hand", hand_key, "--hand-key"), ("third", third_key, "--third-key")):
        if key is None or key == "none":
            continue
        if key not in cams:
            raise LeRobotSourceError(f"{flag} {key!r} is not a camera of this dataset; its cameras are: {listing}")
        chosen[role] = key
    if len(set(chosen.values())) < len(chosen):
        raise LeRobotSourceError(f"--hand-key and --third-key name the same camera {chosen['hand']!r}")
    rest = [k for k in cams if k not in chosen.values()]
    open_roles = [r for r, key in (("hand", hand_key), ("third", third_key)) if key is None]
    if "hand" in open_roles and rest:
        wrist = [k for k in rest if any(h in k.lower().rsplit(".", 1)[-1] for h in HAND_HINTS)]
        if len(wrist) == 1:
            chosen["hand"] = wrist[0]
            rest.remove(wrist[0])
        elif len(wrist) > 1:
            raise LeRobotSourceError(f"several cameras look like a wrist camera ({', '.join(wrist)}); pick one with "
                                     f"--hand-key (cameras: {listing})")
    if "third" in open_roles and rest:
        if len(rest) == 1:
            chosen["third"] = rest.pop()
        else:
            raise LeRobotSourceError(f"cannot tell which camera is which ({', '.join(rest)}); pass --hand-key and "
                                     f"--third-key, or 'none' to leave a role out (cameras: {listing})")
    if not chosen:
        raise LeRobotSourceError(f"no camera was chosen; pass --hand-key or --third-key (cameras: {listing})")
    numeric = [k for k, f in features.items() if f.get("dtype", "").startswith("float") and len(f.get("shape", ())) == 1]
    action_key = action_key or "action"
    if action_key not in numeric:
        raise LeRobotSourceError(f"--action-key {action_key!r} is not a float vector feature of this dataset; "
                                 f"candidates: {', '.join(numeric) or 'none'}")
    state = "observation.state" if "observation.state" in numeric else None
    return {"cameras": {r: chosen[r] for r in ROLES if r in chosen}, "action": action_key, "state": state}


def feature_names(key: str, feature: dict) -> list[str]:
    """A vector feature's per-dimension names (LeRobot stores a list, or {"motors": [...]}); generic if none."""
    dim = int(feature["shape"][0])
    names = feature.get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), None)
    if isinstance(names, list) and len(names) == dim and all(isinstance(n, str) for n in names):
        return names
    return [f"{key}_{i}" for i in range(dim)]


# --------------------------------------------------------------------------- importing
def import_settings(source: str, hand_key: str | None, third_key: str | None, action_key: str | None,
                    episodes: list[int] | None) -> dict:
    where = str(Path(source).expanduser().resolve()) if is_local(source) else source
    return {"source": where, "hand_key": hand_key, "third_key": third_key, "action_key": action_key,
            "episodes": sorted(episodes) if episodes else None, "max_side": MAX_SIDE}


def default_import_dir(settings: dict, base: Path = Path("data") / "lerobot") -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings["source"].strip("/").split("/")[-1]) or "dataset"
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return base / f"{name}-{digest}"


IMPORT_FILE = "lerobot_import.json"


def import_lerobot(source: str, *, hand_key: str | None = None, third_key: str | None = None,
                   action_key: str | None = None, episodes: list[int] | None = None, out: Path | None = None,
                   python: str | None = None, progress=None) -> Path:
    """Import a LeRobotDataset into this project's format through LeRobot's own loader; returns the folder.

    A previous import with the same settings is reused. ``progress(done, total)`` follows the frames read.
    """
    settings = import_settings(source, hand_key, third_key, action_key, episodes)
    if is_local(source):  # check the keys here, before starting LeRobot (seconds) for a bad flag
        info = read_info(Path(settings["source"]))
        resolve_keys(info.get("features", {}), hand_key, third_key, action_key)
    out = Path(out) if out is not None else default_import_dir(settings)
    check_output(out, DATASET, overwrite=True, option="--import-dir",
                 inputs=(settings["source"],) if is_local(source) else ())
    marker = out / IMPORT_FILE
    try:
        done = marker.is_file() and json.loads(marker.read_text()).get("settings") == settings
    except (OSError, ValueError, AttributeError):
        done = False  # a damaged marker: import again
    if done:
        return out
    if out.exists():
        if not marker.is_file():
            raise LeRobotSourceError(f"{out} exists and is not an import of a LeRobot dataset; choose another folder")
        shutil.rmtree(out)  # an import with other settings: redo it
    exe = lerobot_python(python)
    tmp = out.with_name(f".importing-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, str(REPO_ROOT / "lerobot_bridge" / "reader.py"), "--source", settings["source"], "--out", str(tmp),
           "--max-side", str(MAX_SIDE)]
    for flag, value in (("--hand-key", hand_key), ("--third-key", third_key), ("--action-key", action_key)):
        if value is not None:
            cmd += [flag, value]
    if episodes:
        cmd += ["--episodes", *map(str, episodes)]
    summary = _run_reader(cmd, progress)
    (tmp / IMPORT_FILE).write_text(json.dumps({"settings": settings, "summary": summary}, indent=1))
    os.replace(tmp, out)
    return out


def _run_reader(cmd: list[str], progress) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    summary = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("stage") == "import" and progress is not None:
            progress(record["done"], record["total"])
        elif record.get("stage") == "done":
            summary = record
    err = proc.stderr.read()
    if proc.wait() != 0 or summary is None:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        reason = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
        raise LeRobotSourceError(reason or f"LeRobot's reader failed ({lines[-1] if lines else 'no output'}); "
                                 f"rerun with -v, or check {cmd[0]}")
    return summary

