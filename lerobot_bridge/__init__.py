"""LeRobot in and out: export a dataset as a LeRobotDataset v3.0, and import one through LeRobot's own loader in its own environment."""
