import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Hypothesis draws the same examples on every run (a CI run must not turn red by chance; the examples still search
# the whole space the strategies describe). For a wider random search on a workstation:
#   scripts/test.sh --hypothesis-profile=explore tests/test_X.py
# (LeRobot's own environment, scripts/lerobot_check.sh, runs a few of these tests without Hypothesis installed.)
try:
    from hypothesis import settings
except ImportError:
    settings = None
if settings is not None:
    settings.register_profile("deterministic", derandomize=True, database=None)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile("deterministic")
