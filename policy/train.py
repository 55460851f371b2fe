"""Contrastive training of the ALT encoder (NT-Xent on two augmentations of the same frame)."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from policy.augment import augment
from policy.config import PolicyConfig
from policy.data import FrameTable
from policy.encoder import ALTEncoder, nt_xent

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Training stopped between two steps because it was asked to."""


@dataclass(frozen=True)
class TrainProgress:
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    loss: float
    elapsed_s: float
    eta_s: float

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


@dataclass
class TrainResult:
    encoder: ALTEncoder
    losses: list[float] = field(default_factory=list)  # per step
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    train_frames: int = 0


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_encoder(table: FrameTable, config: PolicyConfig, *, progress: Callable[[TrainProgress], None] | None = None,
                  cancel: threading.Event | None = None, device: str | None = None,
                  exclude_episodes: list[int] | None = None) -> TrainResult:
    """Train a fresh encoder on ``table`` (less ``exclude_episodes``, held out for calibration); raises
    TrainingCancelled if ``cancel`` is set (checked every step)."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    dev = pick_device(device)
    encoder = ALTEncoder(config).to(dev)
    encoder.train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.learning_rate)

    rows = np.flatnonzero(table.frame % config.frame_stride == 0)
    if exclude_episodes:
        rows = rows[~np.isin(table.episode[rows], list(exclude_episodes))]
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} training frame(s) after subsampling by {config.frame_stride}; "
                         "record more or lower frame_stride")
    batch = min(config.batch_size, len(rows))
    steps_per_epoch = max(1, len(rows) // batch)  # drop the ragged last batch: NT-Xent wants full batches
    result = TrainResult(encoder=encoder, device=str(dev), train_frames=len(rows))
    jitter, crop = config.color_jitter, config.crop_scale
    start = time.perf_counter()
    done_steps, total_steps = 0, config.epochs * steps_per_epoch
    log.info("training on %d frames (%d episodes), %d epochs x %d steps, batch %d, %s, init %s",
             len(rows), len(table.actions) - len(exclude_episodes or []), config.epochs, steps_per_epoch, batch, dev, encoder.init)
    for epoch in range(1, config.epochs + 1):
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        epoch_losses = []
        for step in range(1, steps_per_epoch + 1):
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled(f"training cancelled at epoch {epoch}, step {step}")
            idx = torch.from_numpy(order[(step - 1) * batch: step * batch])
            hand, third = table.hand[idx], table.third[idx]
            views = []
            for _ in range(2):  # two independent augmentations of the same frames
                pose = None
                if config.use_pose:
                    pose = (table.pose[idx] + torch.randn(len(idx), 7, generator=gen) * config.pose_noise).to(dev)
                extra = {"shadow": config.shadow_probability, "paste": config.paste_probability}
                views.append(encoder(augment(hand, jitter, crop, gen, **extra).to(dev),
                                     augment(third, jitter, crop, gen, **extra).to(dev), pose))
            loss = nt_xent(views[0], views[1], config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            result.losses.append(value)
            epoch_losses.append(value)
            done_steps += 1
            if progress is not None:
                elapsed = time.perf_counter() - start
                eta = elapsed / done_steps * (total_steps - done_steps)
                progress(TrainProgress(epoch, config.epochs, step, steps_per_epoch, value, elapsed, eta))
        result.epoch_losses.append(float(np.mean(epoch_losses)))
        if not math.isfinite(result.epoch_losses[-1]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {result.epoch_losses[-1]})")
    result.seconds = time.perf_counter() - start
    encoder.eval()
    return result


@torch.inference_mode()
def embed_table(encoder: ALTEncoder, table: FrameTable, batch: int = 64,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Embeddings of every frame (no augmentation), [N, D] float32, unit length."""
    return embed_table_views(encoder, table, batch, progress)[0]


@torch.inference_mode()
def embed_table_views(encoder: ALTEncoder, table: FrameTable, batch: int = 64,
                      progress: Callable[[int, int], None] | None = None,
                      rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fused embeddings [N, D] and per-view unit features [N, 2, V] (hand, third) of every frame (or of
    ``rows``), no augmentation."""
    encoder.eval()
    dev = next(encoder.parameters()).device
    rows = np.arange(len(table)) if rows is None else np.asarray(rows)
    fused, views = [], []
    for i in range(0, len(rows), batch):
        idx = torch.from_numpy(rows[i:i + batch])
        pose = table.pose[idx].to(dev) if encoder.pose is not None else None
        z, h, t = encoder.forward_views(table.hand[idx].to(dev), table.third[idx].to(dev), pose)
        fused.append(z.cpu().numpy())
        views.append(torch.stack([h, t], dim=1).cpu().numpy())
        if progress is not None:
            progress(min(i + batch, len(rows)), len(rows))
    return np.concatenate(fused).astype(np.float32), np.concatenate(views).astype(np.float32)
