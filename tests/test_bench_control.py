"""bench/peers.py `--control`: the control process burns as much CPU as the run it stands
for (user + system), no less, in a real process; the summary's ratio is wall over CPU."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from peers import control, stretch  # noqa: E402


def test_the_control_burns_the_cpu_of_the_run_it_stands_for() -> None:
    """A run of 0.15 s user and 0.05 s system CPU: its control's CPU (its interpreter's start
    included) is at least 0.2 s, and not far above (a generous bound, not a timing)."""
    wall, user, system = control((9.0, 0.15, 0.05))
    assert 0.2 <= user + system < 0.2 + 1.0
    assert wall > 0


def test_stretch_is_the_median_of_wall_over_cpu() -> None:
    runs = [(2.0, 0.5, 0.5), (3.0, 1.0, 0.0), (1.0, 1.0, 1.0)]  # 2x, 3x, 0.5x
    assert stretch(runs) == 2.0
