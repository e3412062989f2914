"""Issues 18 (7) and 23 (1, 2, 6): `make gpu-check` checks a GPU or fails, a CPU dry run says it was not a GPU check
and writes its record like a GPU run (here on the CPU with tiny sizes, every section, the CUDA tests left out); the
default jobs per GPU follows from the memory a job needs, measured from tensor sizes."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ucir import devices
from ucir.devices import DEFAULT_JOBS_PER_GPU, GpuPolicy, GpuProbe
from ucir.tools import gpucheck, jobmemory

from ucir.tools.gpurecord import SUMMARY

REPO = Path(__file__).resolve().parents[1]
DRY_OK = "gpu-check: CPU dry run ok (this was not a GPU check)"


def _last_line(out: str) -> str:
    return out.rstrip().splitlines()[-1]


@pytest.fixture
def no_gpu_probe(tmp_path):
    """A machine without any sign of an NVIDIA GPU; a test adds a device node to give it one."""
    (tmp_path / "dev").mkdir()

    def load(name):
        raise OSError(name)
    return GpuProbe(dev_dir=tmp_path / "dev", proc_dir=tmp_path / "proc", load=load, nvml_count=lambda: None)


@pytest.fixture
def torch_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "driver_cuda_version", lambda probe=None: None)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")    # what gpucheck sets, restored after the test
    for name in (*devices.GPU_VARIABLES, "SLURM_JOB_ID"):          # as on a workstation, whatever runs the tests
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sections(monkeypatch):
    """The sections that train, replaced by recorders of the device they were given (the end-to-end test below
    runs them for real)."""
    seen = []

    def record(name, result):
        return lambda device, *a, **k: seen.append((name, device.type)) or result
    schedule = {"fp32": dict(wall=1.0, train=0.5, estimate=60.0, cnn=50.0, nme=50.0)}
    for name, result in (("determinism", True), ("folder_data", True), ("precision_rates", {"fp32": 1.0}),
                         ("schedule", schedule)):
        monkeypatch.setattr(gpucheck, name, record(name, result))
    monkeypatch.setattr(gpucheck.sharing, "measure", record("sharing", {1: [1.0]}))
    return seen


@pytest.mark.parametrize("device", [[], ["--device", "auto"]])
def test_without_a_gpu_the_check_fails_and_names_the_dry_run(torch_without_cuda, no_gpu_probe, sections, capsys,
                                                            device):
    assert gpucheck.main(device + ["--no-bench", "--no-tests"], probe=no_gpu_probe) == 1
    out = capsys.readouterr().out
    assert "signs of an NVIDIA GPU, found without torch: none" in out
    assert "a GPU check needs one" in out and 'GPU_CHECK="--device cpu --tiny"' in out
    assert _last_line(out) == "gpu-check: FAILED (device)" and sections == []


def test_a_gpu_torch_cannot_use_fails_the_check(torch_without_cuda, no_gpu_probe, sections, capsys):
    (no_gpu_probe.dev_dir / "nvidia0").touch()
    assert gpucheck.main(["--no-bench", "--no-tests"], probe=no_gpu_probe) == 1
    out = capsys.readouterr().out
    assert f"device node {no_gpu_probe.dev_dir / 'nvidia0'}" in out and "set device: cpu" in out
    assert _last_line(out) == "gpu-check: FAILED (device)" and sections == []


def test_a_cpu_dry_run_says_it_was_not_a_gpu_check(no_gpu_probe, sections, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    page = tmp_path / "record.md"
    assert gpucheck.main(["--device", "cpu", "--tiny", "--no-bench", "--no-tests", "--record", str(page)],
                         probe=no_gpu_probe) == 0
    out = capsys.readouterr().out
    assert "\n== memory\n" in out and "about " in out and "MiB a job" in out
    assert sections == [("determinism", "cpu"), ("folder_data", "cpu"), ("precision_rates", "cpu"),
                        ("schedule", "cpu"), ("sharing", "cpu")]
    assert "not a GPU check" in page.read_text()
    assert _last_line(out) == DRY_OK


def test_a_failed_cpu_dry_run_says_so_and_that_it_was_not_a_gpu_check(no_gpu_probe, sections, capsys, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(gpucheck, "schedule", lambda *a, **k: {})               # no precision ran
    assert gpucheck.main(["--device", "cpu", "--tiny", "--no-bench", "--no-tests", "--record",
                          str(tmp_path / "record.md")], probe=no_gpu_probe) == 1
    assert _last_line(capsys.readouterr().out) == ("gpu-check: CPU dry run FAILED (schedule) (this was not a GPU "
                                                  "check)")


def test_the_memory_tracker_counts_what_a_step_holds():
    """A 1000 -> 1000 linear layer at batch 500, on the meta device: the output (2 MB) lives until it is deleted,
    the weight's gradient (4 MB) after the backward pass; the peak is both at once (plus a few scalars). The
    weight's transposed view and the input are not counted: they were not made inside."""
    from torch import nn
    live = jobmemory._LiveBytes()
    layer = nn.Linear(1000, 1000, bias=False, device="meta")
    x = torch.empty(500, 1000, device="meta")                                   # x: 500 x 1000 fp32
    with live:
        y = layer(x)                                                             # y: 500 x 1000, 2 MB
        assert live.live == 2_000_000
        y.sum().backward()                                                       # weight.grad: 1000 x 1000, 4 MB
        del y
    assert live.live == 4_000_000
    assert 6_000_000 <= live.peak <= 6_000_000 + 64


def test_the_default_jobs_per_gpu_fit_the_memory_a_job_needs():
    """docs/gpu.md: a job needs its step's tensors, its data on the GPU and CUDA's own memory. The start-up check
    (UCIR_GPU_MIN_FREE_MB) covers the largest job of the paper grid, ResNet-18 at 224 px, and the default 4 jobs
    of it fit a 24 GB GPU; 4 CIFAR jobs fit an 8 GB one."""
    need = {b: jobmemory.job_need_mib(b, c, px, data) for b, c, px, data, _ in jobmemory.JOB_SHAPES}
    assert 3000 < need["resnet18"] <= GpuPolicy().min_free_mib                  # 2.8 GiB of tensors + CUDA's
    assert DEFAULT_JOBS_PER_GPU * need["resnet18"] <= 24 * 1000**3 // 2**20 - 1024   # 24 GB, less the display's share
    assert DEFAULT_JOBS_PER_GPU * need["resnet32"] <= 8 * 1000**3 // 2**20
    assert 1000 < need["resnet32"] < 2000


@pytest.mark.workflow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    record = tmp_path / "gpu-check.md"
    r = subprocess.run([sys.executable, "-m", "ucir.tools.gpucheck", "--device", "cpu", "--tiny", "--no-tests",
                        "--record", str(record)], cwd=REPO, capture_output=True, text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-2000:]
    sections = ("environment", "device", "memory", "bench", "determinism", "folder data", "precisions", "schedule",
                "jobs per GPU")
    for section in sections:
        assert f"\n== {section}\n" in out, section
    assert "torch 2." in out and "CUDA build" in out and "device: cpu" in out
    assert "ratio: " in out and "bit-identical weights" in out and "one DataLoader worker:" in out
    assert "B50 + 10 phases of 5" in out and out.count("at 160 epochs per phase:") == 2
    assert "bf16 - fp32: CNN" in out and "skipped" not in out
    assert _last_line(out) == DRY_OK
    assert "fp32: " in out and "1 job(s) on cpu: " in out and "2 job(s) on cpu: " in out
    assert f"record of what was measured: {record}" in out
    text = record.read_text()
    headings = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headings == [*SUMMARY, *sections]
    for measured in ("| fp32 |", "| bf16 |", "| 1 |", "| 2 |"):         # precisions, schedule, jobs per GPU
        assert measured in text, measured
