"""Devices: arms, cameras and teleop devices behind one base per kind, the safety layer every arm command passes, rig files, and the control loop."""
