"""What `make gpu-check` measured, as a page ready to commit: docs/gpu-check/<gpu name>.md (a CPU dry run writes
results/gpu-check/cpu-dry-run.md, which git ignores; --record PATH writes anywhere).

The page has a summary (the environment, training images/s per precision, kernels per training step, the 10-phase
schedule's time per precision, the jobs per GPU tried with their total images/s) and then every section's output as
it was printed. Kernels per step come from the bench section's output: any line of it that starts with
`kernels per` (ucir.tools.bench prints one where it counts them) is copied into the summary.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
KERNELS = re.compile(r"^kernels per .*$", re.M)
SUMMARY = ("Environment", "Training images/s per precision", "Kernels per training step", "10-phase schedule",
           "Jobs per GPU")


def default_path(device: torch.device) -> Path:
    """docs/gpu-check/<the GPU's name, lower case, dashes>.md; for a CPU dry run results/gpu-check/cpu-dry-run.md."""
    if device.type != "cuda":
        return REPO / "results" / "gpu-check" / "cpu-dry-run.md"
    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return REPO / "docs" / "gpu-check" / f"{name}.md"


class _Tee(io.TextIOBase):
    """Writes to the console and keeps a copy."""

    def __init__(self, console):
        self.console, self.copy = console, io.StringIO()

    def write(self, s: str) -> int:
        self.copy.write(s)
        return self.console.write(s)

    def flush(self) -> None:
        self.console.flush()


@dataclass
class Record:
    argv: list[str]
    outputs: dict[str, str] = field(default_factory=dict)           # section -> what it printed
    measured: dict[str, Any] = field(default_factory=dict)          # section -> what it returned, for the summary

    @contextlib.contextmanager
    def capture(self, name: str):
        """Keep what the section prints (Python's stdout; a subprocess's own output is not kept)."""
        tee = _Tee(sys.stdout)
        try:
            with contextlib.redirect_stdout(tee):
                yield
        finally:
            self.outputs[name] = self.outputs.get(name, "") + tee.copy.getvalue()

    def keep(self, name: str, value):
        """Keep a section's measurement for the summary; return it."""
        self.measured[name] = value
        return value

    # ---- the page ------------------------------------------------------------------------------------------
    def _environment(self, device: torch.device) -> list[str]:
        from ..devices import describe
        from ..io import git_state
        git = git_state()
        return [f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
                f"- command: `python -m ucir.tools.gpucheck {' '.join(self.argv)}`".replace("  ", " "),
                f"- ucir commit: {git['git_commit']}{' (with uncommitted changes)' if git['git_dirty'] else ''}",
                f"- device: {describe(device)}",
                f"- python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}",
                "- the environment section below has the driver, NVML and every GPU"]

    def _precisions(self) -> list[str]:
        rates = self.measured.get("precisions")
        if not rates:
            return ["not measured (see the precisions section)"]
        fp32 = rates.get("fp32")
        rows = [f"| {p} | {r:,.0f} | {f'{r / fp32:.2f}x' if fp32 else '-'} |" for p, r in rates.items()]
        return ["ucir's training loop (ucir.tools.bench's setting: ResNet-32, LUCIR against a teacher), median "
                "images/s; precisions the device cannot train in are left out", "",
                "| precision | images/s | vs fp32 |", "|---|---|---|", *rows]

    def _kernels(self) -> list[str]:
        lines = KERNELS.findall(self.outputs.get("bench", ""))
        return [f"- {line}" for line in lines] or [
            "not counted: the bench section printed no `kernels per ...` line (this version of ucir.tools.bench "
            "does not count kernels, or the section did not run)"]

    def _schedule(self) -> list[str]:
        results = self.measured.get("schedule")
        if not results:
            return ["not measured (see the schedule section)"]
        rows = [f"| {p} | {r['wall']:.1f} | {r['train']:.1f} | {r['estimate'] / 60:.1f} | {r['cnn']:.2f} | "
                f"{r['nme']:.2f} |" for p, r in results.items()]
        return ["the CIFAR-100-shaped protocol (synthetic images, B50 + 10 phases of 5) through the stage functions; "
                "the schedule section says its sizes", "",
                "| precision | wall s | training s | min at 160 epochs | CNN avg. inc. acc. % | NME % |",
                "|---|---|---|---|---|---|", *rows]

    def _sharing(self) -> list[str]:
        results = self.measured.get("jobs per GPU")
        if not results:
            return ["not measured (see the jobs per GPU section)"]
        one = sum(results[min(results)]) / min(results)
        rows = [f"| {n} | {sum(r):,.0f} | {sum(r) / n:,.0f} | {sum(r) / one:.2f}x |" for n, r in results.items()]
        return ["N processes on the one device, each running ucir's training loop for a fixed time at once "
                "(ucir.tools.sharing), their images/s summed", "",
                "| jobs | total images/s | per job | total vs one job |", "|---|---|---|---|", *rows]

    def markdown(self, device: torch.device, verdict: str) -> str:
        title = describe_title(device)
        parts = [f"# gpu-check: {title}", "", f"`{verdict}`", "", "## Summary"]
        for heading, lines in zip(SUMMARY, (self._environment(device), self._precisions(), self._kernels(),
                                            self._schedule(), self._sharing())):
            parts += ["", f"### {heading}", "", *lines]
        parts += ["", "## Output of each section"]
        for name, text in self.outputs.items():
            parts += ["", f"### {name}", "", "```text", text.strip("\n"), "```"]
        return "\n".join(parts) + "\n"

    def write(self, path: str | Path, device: torch.device, verdict: str) -> Path:
        from ..io import save_text
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_text(self.markdown(device, verdict), path)
        return path


def describe_title(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU dry run ({platform.processor() or platform.machine()}; not a GPU check)"
