"""The simulated rig: PyBullet Panda, table and mug, hand and third-person cameras rendered in their own processes, the scripted expert and the scenarios."""
