"""The policy artefact: one folder holding weights, database, index and config, saved and loaded as a unit.

```
POLICY/
  manifest.json        format name + version, SHA-256 of every other file
  config.json          PolicyConfig, OOD calibration, training summary, the dataset it came from, the
                       fingerprint of every episode it was built from, the pose-quaternion reference
  encoder.safetensors  encoder weights (no pickle)
  database.npz         embeddings, (episode, frame) keys, action chunks (loaded with allow_pickle=False)
  index.ann            annoy index over the embeddings
```

Loading checks the version and every checksum before anything is used, so a
tampered, truncated or foreign folder is refused with a message naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

FORMAT_NAME = "alt-studio-policy"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("config.json", "encoder.safetensors", "database.npz", "index.ann")


class PolicyArtifactError(RuntimeError):
    """A policy folder cannot be used as it is; the message says why and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_artifact(out: Path, write_files, overwrite: bool = False) -> Path:
    """Write into a temporary sibling folder (``write_files(tmp_dir)``), add the manifest, put it in place.

    The output path is checked first (:func:`recorder.outputs.check_output`: never a dataset, the working
    folder, the project, ...). With ``overwrite`` an existing policy is replaced atomically: the old one stays
    loadable until the new one is complete and in place (:func:`recorder.outputs.swap_into_place`)."""
    from recorder.outputs import (POLICY, OutputPathError, check_output, format_bytes, free_space_note, swap_into_place,
                                  temp_sibling)

    try:
        out = check_output(out, POLICY, overwrite=overwrite)
    except OutputPathError as exc:
        raise PolicyArtifactError(str(exc)) from None
    tmp = temp_sibling(out)
    try:
        try:
            write_files(tmp)
            names = sorted(p.name for p in tmp.iterdir())
            if names != sorted(FILES):
                raise PolicyArtifactError(f"internal error: policy files {names} != {sorted(FILES)}")
            manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "files": {n: sha256(tmp / n) for n in names}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            for p in tmp.iterdir():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        except PolicyArtifactError:
            raise
        except Exception as exc:  # OSError, and the safetensors / numpy writers' own errors
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) \
                or "no space left" in str(exc).lower()
            written = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
            if full:
                raise PolicyArtifactError(f"the disk is full: could not write the policy to {out} "
                                          f"(while writing into {tmp.name}: {exc}); "
                                          f"{free_space_note(out.parent)}, more than {format_bytes(written)} needed. "
                                          "Free some space and run it again; nothing was replaced.") from exc
            if isinstance(exc, OSError):
                raise PolicyArtifactError(f"could not write the policy to {out}: {exc}; nothing was "
                                          "replaced") from exc
            raise
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_artifact(path: Path) -> dict:
    """Validate a policy folder; returns the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise PolicyArtifactError(f"{path} is not a folder; pass the folder `train` wrote")
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise PolicyArtifactError(f"{path} is not an ALT Studio policy (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyArtifactError(f"{mpath} is corrupt ({exc}); retrain the policy") from exc
    except OSError as exc:
        raise PolicyArtifactError(f"{mpath} cannot be read ({exc})") from exc
    if not isinstance(manifest, dict):
        raise PolicyArtifactError(f"{mpath} is corrupt (a JSON {type(manifest).__name__}, not an object); "
                                  "retrain the policy or restore the folder")
    if manifest.get("format") != FORMAT_NAME:
        raise PolicyArtifactError(f"{mpath}: not an ALT Studio policy (field 'format' is "
                                  f"{manifest.get('format')!r}, expected {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PolicyArtifactError(f"{path} is policy format version {version}; this ALT Studio reads version "
                                  f"{FORMAT_VERSION}. Retrain it with this version (`main.py train`).")
    files = manifest.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(FILES) \
            or not all(isinstance(v, str) for v in files.values()):
        raise PolicyArtifactError(f"{mpath}: field 'files' should map {sorted(FILES)} to checksums; it is "
                                  f"{files!r:.80}. Retrain the policy or restore the folder.")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise PolicyArtifactError(f"{f} is missing; the policy folder is incomplete")
        if sha256(f) != digest:
            raise PolicyArtifactError(f"{f} has been modified since the policy was saved (checksum mismatch); "
                                      "refusing to load it. Retrain or restore the folder.")
    return manifest


# what config.json must hold, and the JSON types each field may take (None: null allowed)
CONFIG_FIELDS = {"config": (dict,), "gamma": (int, float), "calibration": (dict, type(None)), "info": (dict,),
                 "annoy_search_k": (int,), "alignment": (dict, type(None))}


@contextmanager
def reading(file: Path, field: str | None = None):
    """Turn any error raised while using ``file`` (and its ``field``) into one PolicyArtifactError line."""
    try:
        yield
    except PolicyArtifactError:
        raise
    except Exception as exc:  # a damaged file can fail in any reader (zip, safetensors, annoy, our own checks)
        where = f"{file}" + (f", field '{field}'" if field else "")
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, KeyError):
            detail = f"{exc.args[0]!r} is missing"
        raise PolicyArtifactError(f"{where}: {detail.splitlines()[0]} ({type(exc).__name__}); the policy folder "
                                  "is damaged or incomplete: retrain it or restore the folder") from exc


def read_config_doc(path: Path) -> dict:
    """config.json of the policy folder ``path``, every field present and of the right type."""
    file = Path(path) / "config.json"
    with reading(file):
        doc = json.loads(file.read_text())
    if not isinstance(doc, dict):
        raise PolicyArtifactError(f"{file} is a JSON {type(doc).__name__}, not an object; the policy folder is "
                                  "damaged: retrain it or restore the folder")
    for name, types in CONFIG_FIELDS.items():
        if name not in doc:
            raise PolicyArtifactError(f"{file}: field '{name}' is missing; the policy folder is damaged or "
                                      "incomplete: retrain it or restore the folder")
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise PolicyArtifactError(f"{file}: field '{name}' is {value!r:.60}, which is not "
                                      f"{' or '.join(_TYPE_NAMES[t] for t in types)}")
    gamma = doc["gamma"]
    if not math.isfinite(gamma) or not -1 <= gamma <= 1:
        raise PolicyArtifactError(f"{file}: field 'gamma' is {gamma}, not a similarity in [-1, 1]")
    if doc["calibration"] is not None:
        _check_calibration(file, doc["calibration"])
    return doc


_TYPE_NAMES = {dict: "an object", list: "a list", int: "a whole number", float: "a number", str: "a string",
               type(None): "null"}


def _check_calibration(file: Path, cal: dict) -> None:
    """The calibration record: known entries only, each of its type (policy.calibration.Calibration)."""
    from dataclasses import MISSING, fields

    from policy.calibration import Calibration

    known = {f.name: f for f in fields(Calibration)}
    for name in cal:
        if name not in known:
            raise PolicyArtifactError(f"{file}: field 'calibration' has an unknown entry {name!r} (known: "
                                      f"{', '.join(known)}); the policy folder is damaged: retrain or restore it")
    for name, f in known.items():
        if name not in cal:
            if f.default is MISSING and f.default_factory is MISSING:
                raise PolicyArtifactError(f"{file}: field 'calibration' lacks {name!r}; the policy folder is "
                                          "damaged: retrain or restore it")
            continue
        value, default = cal[name], (f.default_factory() if f.default_factory is not MISSING else f.default)
        wanted = (dict,) if isinstance(default, dict) else (list,) if isinstance(default, list) else \
            (str,) if name == "method" else (int, float) if name == "gamma" else (int, float, type(None))
        if isinstance(value, bool) or not isinstance(value, wanted) or \
                isinstance(value, float) and not math.isfinite(value):
            raise PolicyArtifactError(f"{file}: calibration entry {name!r} is {value!r:.60}, which is not "
                                      f"{' or '.join(_TYPE_NAMES[t] for t in wanted)}; the policy folder is damaged")


def save_database(path: Path, embeddings, episodes, frames, chunks, view_embeddings=None, **more) -> None:
    """``more``: further named arrays (the grasp check's thumbnails)."""
    extra = dict(more) if view_embeddings is None else {"view_embeddings": view_embeddings, **more}
    with open(path, "wb") as f:
        np.savez(f, embeddings=embeddings, episodes=episodes, frames=frames, chunks=chunks, **extra)


def load_database_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
