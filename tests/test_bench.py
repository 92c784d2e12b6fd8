"""The benchmark suite's entry point starts (benchmarks themselves are not tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def test_bench_run_help_lists_the_goals() -> None:
    result = subprocess.run(
        [sys.executable, str(RUN), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for goal in ("latency", "cpu", "startup", "memory", "log", "dead", "transport", "--quick"):
        assert goal in result.stdout
