"""Shared primitives every package uses: poses, actions and robot states (SI units), quaternion transforms, the control clock, device errors."""
