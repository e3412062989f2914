"""Seconds a workflow job spends before its first training or inference step, per rule:  make startup

    python -m ucir.tools.startup [--repeat 5] [--root DIR] [--device cpu] [--snakemake CONFIG]

Each rule's job is replayed in a fresh interpreter, the way Snakemake runs a `script:` job: the preamble Snakemake
puts before the script (unpickling its `snakemake` object imports snakemake.script, snakemake.logging and
snakemake.iocontainers), the script's own import lines (read from the workflow/scripts/ file its rule runs, ucir.pipeline), then
what the script does before its stage's first step: ucir.jobs.job() (threads, device), ucir.data.load_run_data (the
training split only where the script passes test=False) and its input checkpoints (torch.load, then the network
built from each model). The report rules (summarize_run, aggregate, plot_*) and the dataset rules (prepare_data,
list_classes) are their imports only.

Each stage rule's job is replayed twice, side by side: mapping the dataset's prepared arrays (the prepare_data rule's
output, ucir.data.prepared), as the workflow runs it, and reading the source itself (unpickling CIFAR-100), as it did
before that rule; the table shows both totals and the cut. Mapping defers reading: the pages are read when first
used (the copy to a GPU, or the first epoch on the CPU), from the page cache that every job on the machine shares.

Data: CIFAR-100 from --root, else a stand-in with its files and sizes (50,000 + 10,000 random images in
torchvision's pickle layout), the paper grid's dataset. Checkpoints: ResNet-32 with a cosine head, 50 classes after
the base phase and 60 after phase 1, 20 exemplars per class. Every figure is the minimum over --repeat runs (the
machine may be shared). --snakemake CONFIG also times what a cluster job adds: the Snakemake that the Slurm plugin
starts inside each allocation, which reads the whole workflow and CONFIG before running its job (timed as a dry run
of one target of CONFIG).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .. import pipeline

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflow" / "scripts"
SEGMENTS = ("python", "imports", "device", "data", "checkpoints")
# The input checkpoints of each stage's job, as workflow/rules/common.smk wires them, in the base phase and in
# phase 1 of a 5-phase CIFAR-100 B50 run (base: the base model; memory0: the memory after the base phase).
STAGE_INPUTS = {
    ("train_base", 0): {},
    ("select_exemplars", 0): {"model": "base"},
    ("evaluate_phase", 0): {"model": "base", "memory": "memory0"},
    ("train_phase", 1): {"model": "base", "memory": "memory0"},
    ("select_exemplars", 1): {"model": "phase1", "memory": "memory0"},
    ("finetune_balanced", 1): {"model": "phase1", "previous": "base", "memory": "memory1"},
    ("evaluate_phase", 1): {"model": "phase1", "memory": "memory1"},
}
PAPER = dict(dataset="cifar100", source="cifar100", num_classes=100, base_classes=50, phases=5, seed=1993,
             backbone="resnet32", per_class=20)


def rule_scripts() -> dict[str, tuple[Path, int]]:
    """{rule: (its script, its threads)}, from ucir.pipeline."""
    return {r.name: (SCRIPTS / f"{r.script}.py", r.threads) for r in pipeline.RULES}


def stage_job(rule: str) -> tuple[str, int, dict[str, str]] | None:
    """(stage, phase, input checkpoints) of the job a rule's script replays; None for the report rules."""
    r = pipeline.rule(rule)
    if r.stage is None:
        return None
    phase = 0 if r.shared else 1
    return r.stage, phase, STAGE_INPUTS[(r.stage, phase)]


def script_imports(path: Path) -> str:
    """The top-level import statements of a script, as source."""
    tree = ast.parse(path.read_text())
    return ast.unparse(ast.Module([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], []))


# ---- the child: one job's start-up ------------------------------------------------------------------------

def child(spec: dict) -> dict[str, float]:
    marks, t0 = {}, spec["t0"]

    def mark(name):
        marks[name] = time.monotonic() - t0 - sum(marks.values())

    import pickle  # noqa: F401  (the preamble's imports)
    import snakemake.iocontainers  # noqa: F401
    import snakemake.logging  # noqa: F401
    import snakemake.script  # noqa: F401
    mark("python")
    sys.path.append(str(SCRIPTS))                  # as Snakemake does for a script: its folder's modules import
    exec(compile(script_imports(Path(spec["script"])), spec["script"], "exec"), {"__name__": "startup"})
    mark("imports")
    if spec.get("stage"):
        from ..checkpoint import load_model
        from ..data import load_run_data
        from ..io import load_torch
        from ..jobs import job
        with job(spec["settings"], spec["execution"], spec["log"], spec["threads"], prepared=spec.get("prepared"),
                 inference=spec.get("inference", False)) as j:
            mark("device")
            load_run_data(j.cfg, j.device, workers=spec["threads"], test=spec["test"], prepared=j.prepared)
            mark("data")
            for path in spec["inputs"].values():
                ckpt = load_torch(path)
                if "model" in ckpt:
                    load_model(ckpt, j.cfg, ckpt["phase"], j.device)
            mark("checkpoints")
    return marks


# ---- the parent: data, checkpoints, repeats ---------------------------------------------------------------

def fake_cifar100(root: Path, train: int = 50000, test: int = 10000, seed: int = 0) -> None:
    """CIFAR-100's three pickles with its sizes (random images; torchvision's layout and keys)."""
    import pickle

    import numpy as np
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        labels = np.repeat(np.arange(100), n // 100).tolist()
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": labels,
                 "coarse_labels": [c // 5 for c in labels], "filenames": [f"{i}.png" for i in range(n)],
                 "batch_label": name}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f, protocol=2)


def checkpoints(cfg, folder: Path) -> dict[str, str]:
    """The inputs of STAGE_INPUTS: base and phase-1 models, the memories after the base phase and phase 1."""
    import torch

    from ..checkpoint import make_checkpoint
    from ..io import save_torch
    from ..models import build_model
    out = {}
    for name, phase in (("base", 0), ("phase1", 1)):
        net = build_model(cfg.backbone, cfg.head, cfg.classes_seen(phase), 3, cfg.last_relu)
        save_torch(make_checkpoint(net, cfg, phase, cfg.classes_seen(phase - 1) if phase else 0, {}),
                   folder / f"{name}.pt")
        n = cfg.classes_seen(phase)
        label = torch.arange(n).repeat_interleave(cfg.per_class)
        memory = {"index": label * 500 + torch.arange(cfg.per_class).repeat(n), "label": label,
                  "rank": torch.arange(cfg.per_class).repeat(n)}
        save_torch(memory, folder / f"memory{phase}.pt")
        out[name], out[f"memory{phase}"] = str(folder / f"{name}.pt"), str(folder / f"memory{phase}.pt")
    return out


def measure(rule: str, script: Path, threads: int, spec: dict, repeat: int) -> list[dict[str, float]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    runs = []
    for _ in range(repeat):
        spec = dict(spec, script=str(script), threads=threads, t0=time.monotonic())
        r = subprocess.run([sys.executable, "-m", "ucir.tools.startup", "--child", json.dumps(spec)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{rule}: the replayed job failed:\n{r.stdout[-3000:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return runs


def snakemake_seconds(configfile: str, repeat: int) -> float:
    """A dry run of one job of `configfile` (its first base model): what the Snakemake inside a cluster job reads
    before it runs its job. In a scratch folder with empty data folders (a dry run reads no data)."""
    import yaml

    from ..grid import expand_runs
    config = yaml.safe_load(Path(configfile).read_text())
    r = expand_runs(config)[0]
    target = f"results/{r.dataset}/base/{r.base}/seed{r.seed}/model.pt"
    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for ds in config["datasets"].values():
            if ds.get("root"):
                (Path(tmp) / ds["root"]).mkdir(parents=True, exist_ok=True)
        for _ in range(repeat):
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                "--directory", tmp, "--configfile", str(Path(configfile).resolve()), "--dry-run",
                                "--quiet", "rules", "--", target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            if p.returncode != 0:
                raise RuntimeError(f"snakemake -n {target} failed:\n{p.stdout[-3000:]}")
            best = min(best, time.monotonic() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per rule; the minimum is printed")
    ap.add_argument("--root", help="a CIFAR-100 folder (holds cifar-100-python/); default: a generated stand-in")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--rules", nargs="+", help="only these rules")
    ap.add_argument("--snakemake", metavar="CONFIG", help="also time the Snakemake inside a cluster job on CONFIG")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from .. import deps
    from ..config import resolve
    from ..data import prepare_dataset
    scripts = rule_scripts()
    rules = args.rules or list(scripts)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.root
        if root is None:
            root = str(tmp / "cifar100")
            fake_cifar100(Path(root))
        cfg = resolve("lucir", dict(PAPER, root=root))
        inputs = checkpoints(cfg, tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                        # a stand-in is not the official file
            prepared = str(Path(prepare_dataset("cifar100", root, str(tmp / "prepared"))[0]).parent)
        print(f"job start-up per rule, seconds from the interpreter's start to the first training or inference "
              f"step; minimum of {args.repeat} runs each; CIFAR-100 {'at ' + root if args.root else '(stand-in)'}, "
              f"ResNet-32, device {args.device}, {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("the segments and `total`: the job as the workflow runs it (the dataset mapped from its prepared "
              "arrays); `read`, `before`: its data segment and total when it reads the source instead (unpickling "
              "it, as before the prepare_data rule); `cut`: read - data (the one segment that differs; the others "
              "vary with the machine's load)")
        header = ["rule", *SEGMENTS, "total", "read", "before", "cut"]
        print("  ".join(f"{h:>11}" if i else f"{h:<22}" for i, h in enumerate(header)))
        for rule in rules:
            script, threads = scripts[rule]
            spec: dict = {"log": str(tmp / f"{rule}.log")}
            if stage_job(rule):
                stage, phase, names = stage_job(rule)
                spec.update(stage=stage, settings=deps.stage_settings(stage, cfg, phase),
                            execution={"root": root, "device": args.device},
                            test="test=False" not in script.read_text(),
                            inputs={k: inputs[v] for k, v in names.items()},
                            inference=pipeline.rule(rule).inference_only)
                read = measure(rule, script, threads, dict(spec, prepared=None), args.repeat)
                spec["prepared"] = prepared
            runs = measure(rule, script, threads, spec, args.repeat)
            best = {k: min(r[k] for r in runs) for k in runs[0]}
            total = min(sum(r.values()) for r in runs)
            cells = [f"{best[k]:11.2f}" if k in best else f"{'-':>11}" for k in SEGMENTS]
            if stage_job(rule):
                before, read_data = min(sum(r.values()) for r in read), min(r["data"] for r in read)
                cells += [f"{total:11.2f}", f"{read_data:11.2f}", f"{before:11.2f}",
                          f"{read_data - best['data']:11.2f}"]
            else:
                cells += [f"{total:11.2f}", *[f"{'-':>11}"] * 3]
            print(f"{rule:<22}  " + "  ".join(cells), flush=True)
    if args.snakemake:
        print(f"cluster job, Snakemake inside the allocation ({args.snakemake}; dry run of one job): "
              f"{snakemake_seconds(args.snakemake, args.repeat):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
