"""Issue 18 (7) and issue 23 (6): `make gpu-check` runs end to end and writes its record; here on the CPU with tiny
sizes (about a minute, hence the workflow marker), every section, the CUDA tests left out (they skip without a GPU
and would rerun pytest)."""
import subprocess
import sys
from pathlib import Path

import pytest

from ucir.tools.gpurecord import SUMMARY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.workflow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    record = tmp_path / "gpu-check.md"
    r = subprocess.run([sys.executable, "-m", "ucir.tools.gpucheck", "--device", "cpu", "--tiny", "--no-tests",
                        "--record", str(record)], cwd=REPO, capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    sections = ("environment", "device", "bench", "determinism", "folder data", "precisions", "schedule",
                "jobs per GPU")
    for section in sections:
        assert f"\n== {section}\n" in out, section
    assert "torch 2." in out and "CUDA build" in out and "device: cpu" in out
    assert "ratio: " in out and "bit-identical weights" in out and "one DataLoader worker:" in out
    assert "B50 + 10 phases of 5" in out and out.count("at 160 epochs per phase:") == 2
    assert "bf16 - fp32: CNN" in out and "skipped" not in out
    assert "fp32: " in out and "1 job(s) on cpu: " in out and "2 job(s) on cpu: " in out
    assert out.rstrip().endswith("gpu-check: ok") and f"record of what was measured: {record}" in out
    text = record.read_text()
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headings == [*SUMMARY, *sections]
    for measured in ("| fp32 |", "| bf16 |", "| 1 |", "| 2 |"):         # precisions, schedule, jobs per GPU
        assert measured in text, measured
