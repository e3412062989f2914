"""Issue 23 (6): `make gpu-check` records what it measured in a page ready to commit (ucir.tools.gpurecord), and the
jobs-per-GPU measurement runs N processes at once (ucir.tools.sharing); on the CPU, with tiny sizes. The whole
check writing its page end to end: tests/test_gpu_check.py."""
from __future__ import annotations

import pytest
import torch

from ucir.tools import gpurecord, sharing
from ucir.tools.gpurecord import SUMMARY, Record

CPU = torch.device("cpu")
SCHEDULE = {p: dict(wall=12.5, train=10.0, estimate=600.0, cnn=51.25, nme=49.5) for p in ("fp32", "bf16")}


def _record(bench_output: str) -> Record:
    record = Record(["--device", "cpu", "--tiny"])
    with record.capture("environment"):
        print("python 3.11, torch 2.14.1")
    with record.capture("bench"):
        print(bench_output)
    record.keep("precisions", {"fp32": 400.0, "bf16": 600.0})
    record.keep("schedule", SCHEDULE)
    record.keep("jobs per GPU", {1: [300.0], 2: [250.0, 260.0], 4: [140.0, 150.0, 130.0, 160.0]})
    return record


def test_the_record_has_every_section_and_what_each_measured(tmp_path):
    path = _record("ucir  images/s: min 1  median 2  max 3\nkernels per LUCIR step: 301 (iCaRL: 120)").write(
        tmp_path / "deep" / "cpu.md", CPU, "gpu-check: ok")
    text = path.read_text()
    assert text.startswith("# gpu-check: CPU dry run") and "`gpu-check: ok`" in text
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headings[:len(SUMMARY)] == list(SUMMARY) and headings[len(SUMMARY):] == ["environment", "bench"]
    assert "## Summary" in text and "## Output of each section" in text
    assert "--device cpu --tiny" in text and f"torch {torch.__version__}" in text       # the environment
    assert "| fp32 | 400 | 1.00x |" in text and "| bf16 | 600 | 1.50x |" in text        # images/s per precision
    assert "- kernels per LUCIR step: 301 (iCaRL: 120)" in text                           # from the bench's output
    assert "| bf16 | 12.5 | 10.0 | 10.0 | 51.25 | 49.50 |" in text                        # the schedule
    assert "| 2 | 510 | 255 | 1.70x |" in text and "| 4 | 580 | 145 | 1.93x |" in text    # jobs per GPU, summed
    assert "```text\npython 3.11, torch 2.14.1\n```" in text                              # every section's output


def test_the_record_says_what_was_not_measured(tmp_path):
    record = Record([])
    with record.capture("bench"):
        print("ucir  images/s: min 1  median 2  max 3")
    text = record.markdown(CPU, "gpu-check: FAILED (schedule)")
    assert "not counted: the bench section printed no `kernels per ...` line" in text
    assert text.count("not measured") == 3 and "FAILED (schedule)" in text


def test_the_default_page_of_a_gpu_is_named_after_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert gpurecord.default_path(torch.device("cuda", 0)) == gpurecord.REPO / "docs/gpu-check/nvidia-h100-80gb-hbm3.md"
    assert gpurecord.default_path(CPU) == gpurecord.REPO / "results/gpu-check/cpu-dry-run.md"   # git-ignored


def test_jobs_per_gpu_start_together_and_each_report_a_rate():
    reports = sharing.run_together(CPU, 2, 0.5, per_class=1, batch_size=16)
    assert len(reports) == 2
    for r in reports:
        assert r["images"] >= 100 and r["rate"] > 0 and r["seconds"] >= 0.5
        assert r["go"] <= r["start"] < r["end"]           # nobody trained before all were ready


def test_a_worker_that_fails_is_reported_with_its_error():
    with pytest.raises(RuntimeError, match="(?s)ended before it was ready.*precision: tf32 cannot train"):
        sharing.run_together(CPU, 1, 0.1, precision="tf32", per_class=1, batch_size=16)


def test_gpu_check_writes_its_record_where_asked_even_when_sections_are_skipped(tmp_path, monkeypatch, capsys):
    """In-process and in a second: with no time budget every section is skipped, and the record says so."""
    from ucir.tools import gpucheck
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")                 # prepare_environment's, undone after
    threads = torch.get_num_threads()
    try:
        assert gpucheck.main(["--device", "cpu", "--tiny", "--budget-s", "-1", "--record",
                              str(tmp_path / "r.md")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert f"record of what was measured: {tmp_path / 'r.md'}" in out
    text = (tmp_path / "r.md").read_text()
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    sections = ["environment", "bench", "determinism", "folder data", "precisions", "schedule", "jobs per GPU",
                "tests"]
    assert headings[:len(SUMMARY)] == list(SUMMARY) and set(sections) <= set(headings[len(SUMMARY):])
    assert text.count("skipped: past the -1 s budget") >= len(sections)
