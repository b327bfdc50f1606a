"""The benchmarks run in the test environment (``--quick``); nothing here asserts a time.

Each script must finish, agree with its baseline where it checks agreement, write its results file and end
with ``ratio: <x>``. The results go to a temporary folder, never over the committed ones.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(script: str, tmp_path: Path, *options: str) -> tuple[float, dict]:
    """Run ``benchmarks/<script>.py --quick`` on the CPU into ``tmp_path``; its ratio and results record."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *options, "--quick", "--device", "cpu",
         "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio: ")
    (written,) = tmp_path.glob(f"{script}-*.json")
    return float(last.removeprefix("ratio: ")), json.loads(written.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bench_upscale", "bench_finetune", "bench_quality"])
def test_benchmark_runs_quick_and_reports_a_ratio(name, tmp_path):
    if name == "bench_upscale" and importlib.util.find_spec("realesrgan") is None:
        pytest.skip(  # the other two need no baseline package (bench_finetune falls back on our network)
            "the baselines (benchmarks/requirements.txt) are not installed; ./quickstart installs them"
        )
    ratio, record = run_quick(name, tmp_path)
    assert ratio > 0
    assert record["benchmark"] == name
    assert record["settings"]["quick"] is True


@pytest.mark.slow
def test_scale_benchmark_runs_its_throughput_part_quick(tmp_path):
    ratio, record = run_quick("bench_scale", tmp_path, "--part", "throughput")
    assert ratio > 0
    assert record["benchmark"] == "bench_scale-throughput"
    assert record["settings"]["quick"] is True
    assert [row["contender"] for row in record["rows"]] == ["this process", "1 worker(s)", "2 worker(s)"]


@pytest.mark.slow
def test_scale_benchmark_runs_its_resume_part_quick(tmp_path):
    ratio, record = run_quick("bench_scale", tmp_path, "--part", "resume")
    assert ratio > 0
    assert record["benchmark"] == "bench_scale-resume"
    assert record["same"] is True
    assert record["kept"] > 0
