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

import hashlib
import json
import os
import shutil
import tempfile
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
    """Write into a temporary sibling folder (``write_files(tmp_dir)``), add the manifest, rename into place."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise PolicyArtifactError(f"{out} already exists; choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
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
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
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
    if manifest.get("format") != FORMAT_NAME:
        raise PolicyArtifactError(f"{mpath}: not an ALT Studio policy")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PolicyArtifactError(f"{path} is policy format version {version}; this ALT Studio reads version "
                                  f"{FORMAT_VERSION}. Retrain it with this version (`main.py train`).")
    files = manifest.get("files", {})
    if sorted(files) != sorted(FILES):
        raise PolicyArtifactError(f"{mpath} lists {sorted(files)}, expected {sorted(FILES)}")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise PolicyArtifactError(f"{f} is missing; the policy folder is incomplete")
        if sha256(f) != digest:
            raise PolicyArtifactError(f"{f} has been modified since the policy was saved (checksum mismatch); "
                                      "refusing to load it. Retrain or restore the folder.")
    return manifest


def save_database(path: Path, embeddings, episodes, frames, chunks, view_embeddings=None, **more) -> None:
    """``more``: further named arrays (the grasp check's thumbnails)."""
    extra = dict(more) if view_embeddings is None else {"view_embeddings": view_embeddings, **more}
    with open(path, "wb") as f:
        np.savez(f, embeddings=embeddings, episodes=episodes, frames=frames, chunks=chunks, **extra)


def load_database_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
