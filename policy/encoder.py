"""The ALT fusion encoder: two camera views (and optionally the pose) -> one unit vector."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from policy.config import PolicyConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
VIEWS = ("hand", "third")


def imagenet_weights_path() -> Path:
    """Where torchvision caches the ResNet-18 ImageNet weights ($TORCH_HOME/hub/checkpoints/...)."""
    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def download_imagenet_weights(path: Path) -> None:
    """Fetch torchvision's ResNet-18 ImageNet weights into ``path`` (the hash in the file name is checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.load_state_dict_from_url(ResNet18_Weights.IMAGENET1K_V1.url, model_dir=str(path.parent),
                                       map_location="cpu", progress=False, check_hash=True, weights_only=True)


def load_backbone(pretrained: str) -> tuple[nn.Module, str]:
    """ResNet-18 and how it was initialised ("imagenet" or "random").

    ``auto`` uses the ImageNet weights when they are in torchvision's cache and never touches the network;
    ``imagenet`` downloads them when they are not cached and fails with the file and folder to put them in when
    that is impossible; ``none`` is random initialisation.
    """
    net = resnet18(weights=None)
    if pretrained == "none":
        return net, "random"
    path = imagenet_weights_path()
    if pretrained == "imagenet" and not path.is_file():
        try:
            download_imagenet_weights(path)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
            raise FileNotFoundError(
                f"ImageNet weights for ResNet-18 are not at {path} and could not be downloaded ({exc}); copy "
                f"{path.name} into {path.parent} (from a machine with internet access) or use "
                "--backbone-weights none") from None
    if path.is_file():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log.info("encoder: ResNet-18 initialised from ImageNet weights at %s", path)
        return net, "imagenet"
    log.warning("encoder: ImageNet weights not found at %s; ResNet-18 starts from random initialisation "
                "(--backbone-weights imagenet downloads them)", path)
    return net, "random"


class ALTEncoder(nn.Module):
    """One ResNet-18 shared by the views (fc: 512 -> view_dim), concat -> MLP -> embed_dim, L2-normalised.

    ``config.views`` names the camera roles used: both ("hand", "third", the paper's) or one of them (a rig or
    dataset with a single camera); a role the config leaves out is ignored where it is passed in.
    """

    def __init__(self, config: PolicyConfig, pretrained: str | None = None):
        super().__init__()
        self.config = config
        backbone, self.init = load_backbone(config.pretrained if pretrained is None else pretrained)
        backbone.fc = nn.Linear(512, config.view_dim)
        self.backbone = backbone
        fused = len(config.views) * config.view_dim
        if config.use_pose:
            self.pose = nn.Sequential(nn.Linear(7, config.pose_hidden), nn.ReLU(),
                                      nn.Linear(config.pose_hidden, config.pose_dim))
            fused += config.pose_dim
        else:
            self.pose = None
        self.fusion = nn.Sequential(nn.Linear(fused, config.fusion_hidden), nn.ReLU(),
                                    nn.Linear(config.fusion_hidden, config.embed_dim))
        self.register_buffer("mean", IMAGENET_MEAN.clone(), persistent=False)
        self.register_buffer("std", IMAGENET_STD.clone(), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] or float [B, 3, H, W] in [0, 1] -> ImageNet-normalised float [B, 3, H, W]."""
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        return (images - self.mean) / self.std

    def forward(self, hand: torch.Tensor | None, third: torch.Tensor | None,
                pose: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_views(hand, third, pose)[0]

    def forward_views(self, hand: torch.Tensor | None, third: torch.Tensor | None,
                      pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused unit embedding and, from the same pass, each view's own unit feature (hand, third):
        the OOD gate compares those per view with the retrieved frame's. A one-view encoder gives its one
        view's feature for both."""
        given = {"hand": hand, "third": third}
        images = [given[v] for v in self.config.views]
        if any(x is None for x in images):
            raise ValueError(f"this encoder uses the views {list(self.config.views)}; pass an image for each")
        b = images[0].shape[0]
        views = self.backbone(torch.cat([self.normalize(x) for x in images], dim=0))
        parts = [views[i * b:(i + 1) * b] for i in range(len(images))]
        if self.pose is not None:
            if pose is None:
                raise ValueError("this encoder was trained with the pose branch; pass the end-effector pose")
            parts.append(self.pose(pose))
        fused = F.normalize(self.fusion(torch.cat(parts, dim=1)), dim=1)
        per_view = dict(zip(self.config.views, (F.normalize(x, dim=1) for x in parts)))
        only = next(iter(per_view.values()))
        return fused, per_view.get("hand", only), per_view.get("third", only)


def resize_view(image: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """An RGB frame at the encoder's input size (INTER_AREA when shrinking)."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (config.image_width, config.image_height):
        return image
    interp = cv2.INTER_AREA if w > config.image_width else cv2.INTER_LINEAR
    return cv2.resize(image, (config.image_width, config.image_height), interpolation=interp)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR): z1[i] and z2[i] are a positive pair; every other row of the 2B batch is a negative.

    Inputs are L2-normalised embeddings [B, D]. The loss averages the 2B
    cross-entropies -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)).
    """
    b = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)
