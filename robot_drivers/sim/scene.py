"""Scene description shared by the task (which decides it) and the world (which builds it).

Kept free of pybullet so that listing scenarios or reading a dataset never loads the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

DISTRACTOR_MODELS = (
    ("duck_vhacd.urdf", 0.8),
    ("teddy_vhacd.urdf", 0.6),
    ("cube_small.urdf", 1.0),
    ("sphere_small.urdf", 1.2),
    ("jenga/jenga.urdf", 0.8),
    ("lego/lego.urdf", 1.5),
)


@dataclass
class Lighting:
    direction: tuple[float, float, float] = (0.6, -0.4, 1.0)  # towards the light, world frame
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.6
    diffuse: float = 0.35
    specular: float = 0.05
    shadow: bool = False  # shadows double the render time of the CPU renderer
