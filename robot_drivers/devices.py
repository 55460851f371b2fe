"""The `devices` verb: what is plugged in, and whether the arms of a rig file answer."""

from __future__ import annotations

import socket

from robot_drivers import registry


def check_reachable(host: str, port: int, timeout: float = 1.0) -> tuple[bool, str]:
    """Open (and close) a TCP connection: (True, "") if something answers, else (False, why)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, str(exc) or type(exc).__name__


def realsense_lines() -> list[str]:
    try:
        from robot_drivers.realsense import list_devices
        cameras = list_devices()
    except Exception as exc:  # noqa: BLE001 - a listing must not crash the verb
        return [f"RealSense: cannot list cameras: {exc}"]
    if not cameras:
        return ["no RealSense cameras found (check the USB 3 cable and port, and the udev rules: docs/bringup.md)"]
    lines = [f"RealSense cameras ({len(cameras)}):"]
    for cam in cameras:
        usb = cam["usb"] or "?"
        warn = "  <- USB 2: use a USB 3 port and cable" if usb.startswith("2") else ""
        lines.append(f"  serial {cam['serial']}  {cam['name']}  firmware {cam['firmware'] or '?'}  USB {usb}{warn}")
    return lines


def video_lines() -> list[str]:
    from robot_drivers.opencv_camera import list_video_devices

    nodes = list_video_devices()
    if not nodes:
        return ["no V4L2 video devices (/dev/video*) found"]
    return [f"V4L2 video devices (OpenCV cameras; a RealSense shows several): {' '.join(nodes)}"]


def rig_lines(path: str, ping: bool, timeout: float = 1.0) -> list[str]:
    from robot_drivers.rig_config import load_rig_config

    config = load_rig_config(path)
    arm = config.arm
    lines = [f"rig {config.name} ({config.path}), {config.rate_hz:g} Hz:"]
    line = f"  arm: {arm.type} at {arm.config.ip}"
    port = registry.lookup("arm", arm.type).option("port")  # the TCP port its SDK talks to
    if ping and port is None:
        line += "  (no port registered for this arm: not pinged)"
    elif ping:
        ok, why = check_reachable(arm.config.ip, port, timeout)
        line += f"  port {port}: " + ("reachable" if ok else f"NOT reachable ({why}); see docs/bringup.md")
    lines.append(line)
    if arm.gripper is not None:
        lines.append(f"  gripper: robotiq at {arm.gripper.host}:{arm.gripper.port}")
    for cam in config.cameras:
        c = cam.config
        key = registry.lookup("camera", cam.type).option("ident")  # the config field that names the camera
        ident = f" {key} {getattr(c, key)}" if key else ""
        lines.append(f"  camera {cam.role}: {cam.type}{ident}, {c.width}x{c.height} @ {c.fps:g} fps")
    lines.append(f"  teleop: {config.teleop.type if config.teleop else 'none'}")
    return lines
