"""benchmarks/gpu_check.py runs end to end (on CPU here, tiny model) and prints its one table, a row per engine."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_prints_its_table(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--allow-cpu", "--models", "tiny-random", "--prompts", "2", "--g", "2",
           "--tokens", "4", "--steps", "2", "--out", str(tmp_path / "gpu_check.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines.index("| model | engine | generation tokens/s | step s | peak memory MiB |")
    hf, vllm = lines[header + 2], lines[header + 3]
    assert hf.startswith("| tiny-random | hf | ") and float(hf.split("|")[4]) > 0  # a measured step time
    assert vllm.startswith("| tiny-random | vllm | ")
    assert (tmp_path / "gpu_check.json").exists()
