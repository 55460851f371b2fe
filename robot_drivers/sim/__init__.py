"""The simulated rig: PyBullet Panda, table and mug, hand and third-person cameras rendered in their own processes, the scripted expert and the scenarios.

Registered as the built-in robot "sim" (``--robot sim``); PyBullet is imported when the rig is made, not here."""

from __future__ import annotations

from robot_drivers.registry import register_rig

#: The simulator's control rate (Hz) when none is given.
SIM_RATE_HZ = 10.0


@register_rig("sim")
def make_sim_rig(*, clock: str = "lockstep", image_size: int = 128, rate_hz: float | None = None):
    """The simulated rig, not connected: ``clock`` "lockstep" or "realtime", square images of ``image_size``."""
    from robot_drivers.sim.rig import SimRig, SimRigConfig

    rate = SIM_RATE_HZ if rate_hz is None else rate_hz
    return SimRig(SimRigConfig(clock=clock, rate_hz=rate).with_image_size(image_size, image_size))
