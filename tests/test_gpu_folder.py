"""Issue 18 (2, 4): folder (ImageNet-layout) data through one persistent DataLoader per job whose workers ignore
SIGTERM, so a job that Slurm stops (SIGTERM to every process of the job) saves its resumable state and exits as the
in-memory path does; batches are the same with any number of workers. The last test drives it through the
workflow on a small JPEG tree."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from smk import job_pid, run_to_end, start, wait_for
from ucir.config import resolve
from ucir.data import load_run_data
from ucir.data.loaders import FolderImages
from ucir.data.sources import load_imagenet
from ucir.data.specs import spec_for
from ucir.io import load_torch
from ucir.models import build_model
from ucir.train.loop import Objective, Preempted, fit

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
WNIDS = ["n01000000", "n02000000", "n03000000", "n04000000"]


def write_tree(root: Path, train_per_class: int, val_per_class: int, size: int = 20) -> Path:
    """ImageNet's layout, root/{train,val}/<wnid>/*.JPEG, of random RGB JPEGs."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("imagenet"), 4, 1)


def _pass(images: FolderImages, train: bool, seed: int = 0):
    idx = torch.arange(len(images.split))
    return [(x.clone(), y.clone()) for x, y in images.batches(idx, 5, train, torch.Generator().manual_seed(seed))]


def _worker_pids(images: FolderImages) -> list[int]:
    return [w.pid for w in images.loader()._iterator._workers]


def test_one_persistent_loader_serves_every_pass(tree):
    train, _ = load_imagenet(str(tree))
    images = FolderImages(train, spec_for("imagenet"), CPU, workers=2)
    _pass(images, train=False)                                      # feature extraction (imprinting, herding)
    loader, pids = images.loader(), _worker_pids(images)
    assert len(pids) == 2
    for _ in range(2):                                              # two training epochs
        batches = _pass(images, train=True)
        assert [len(y) for _, y in batches] == [5, 5, 5, 1] and batches[0][0].shape == (5, 3, 224, 224)
    assert images.loader() is loader and _worker_pids(images) == pids          # the same workers all along


def test_batches_do_not_depend_on_the_worker_count(tree):
    train, _ = load_imagenet(str(tree))
    spec = spec_for("imagenet")
    runs = {w: _pass(FolderImages(train, spec, CPU, workers=w), train=True, seed=3) for w in (0, 2)}
    again = _pass(FolderImages(train, spec, CPU, workers=2), train=True, seed=3)
    other = _pass(FolderImages(train, spec, CPU, workers=2), train=True, seed=4)
    for a, b, c in zip(runs[0], runs[2], again):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(b[0], c[0])
    assert not torch.equal(runs[2][0][0], other[0][0])              # the seed matters


def test_loader_workers_survive_sigterm(tree):
    train, _ = load_imagenet(str(tree))
    images = FolderImages(train, spec_for("imagenet"), CPU, workers=2)
    it = images.batches(torch.arange(len(train)), 2, True, torch.Generator().manual_seed(0))
    next(it)
    for pid in _worker_pids(images):
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert len(list(it)) == 7                                       # the rest of the epoch arrives


_EXIT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_gpu_folder import FolderImages, load_imagenet, spec_for
train, _ = load_imagenet({root!r})
images = FolderImages(train, spec_for("imagenet"), torch.device("cpu"), workers=2)
for _ in images.batches(torch.arange(len(train)), 4, True, torch.Generator().manual_seed(0)):
    pass
next(images.batches(torch.arange(len(train)), 4, True, torch.Generator().manual_seed(1)))   # a pass left half done
print("exiting", flush=True)
"""


def test_a_process_with_loader_workers_exits(tree):
    """Workers that ignore SIGTERM must still be stopped at exit (multiprocessing's exit handler would SIGTERM
    them and wait forever)."""
    r = subprocess.run([sys.executable, "-c", _EXIT.format(tests=str(REPO / "tests"), root=str(tree))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "exiting", r.stderr[-2000:]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_sigterm_to_every_process_saves_the_state_with_folder_data(tree, tmp_path):
    """As Slurm does at a time limit: SIGTERM to the training process and to its loader workers at once."""
    torch.set_num_threads(1)
    cfg = resolve("lucir", dict(dataset="folder", source="imagenet", root=str(tree), num_classes=4, base_classes=2,
                                phases=1, backbone="resnet8", base_train=dict(epochs=3, milestones=[], batch_size=4)))
    data = load_run_data(cfg, CPU, workers=2, test=False)
    net = build_model("resnet8", "cosine", 2, 3, False)
    state = tmp_path / "state.pt"
    sent = []

    def log(msg):
        if msg.startswith("phase 0 epoch 1/") and not sent:
            sent[:] = _descendants(os.getpid())
            assert len(sent) >= 2                                   # the loader's workers are running
            for pid in [os.getpid(), *sent]:
                os.kill(pid, signal.SIGTERM)
    with pytest.raises(Preempted):
        fit(net, Objective(cfg, 0), data.train_loader, data.train_indices(0, 2), cfg.base_train, device=CPU,
            g=torch.Generator().manual_seed(0), log=log, desc="phase 0", state_path=state, fingerprint="f")
    st = load_torch(state)
    assert (st["epoch"], st["batches_done"]) == (1, 0)             # at the epoch's end: saved before the next one
    fit(net, Objective(cfg, 0), data.train_loader, data.train_indices(0, 2), cfg.base_train, device=CPU,
        g=torch.Generator().manual_seed(0), log=lambda msg: None, desc="phase 0", state_path=state, fingerprint="f")
    assert not state.exists()                                       # resumed and finished with the same workers


# ------------------------------------------------------------------------------------------ through the workflow
RUN = "results/folder/lucir/default/p1/seed1993"
LOG = "logs/folder/lucir/default/p1/seed1993/phase1/train_phase.log"


@pytest.mark.workflow
def test_slurm_style_sigterm_with_folder_data_resumes_through_the_workflow(tmp_path):
    root = write_tree(tmp_path / "imagenet", 8, 2)
    config = tmp_path / "folder.yaml"
    config.write_text(yaml.safe_dump({
        "seeds": [1993],
        "datasets": {"folder": {"source": "imagenet", "root": str(root), "num_classes": 4, "base_classes": 2,
                                "settings": {"backbone": "resnet8", "per_class": 2, "checkpoint_every": 1,
                                             "eval_batch_size": 8,
                                             "base_train": {"epochs": 1, "milestones": [], "batch_size": 8},
                                             "train": {"epochs": 20, "milestones": [], "batch_size": 4}}}},
        "experiments": {"main": {"datasets": ["folder"], "methods": ["lucir"], "phases": [1], "plot": "none"}}}))
    work = tmp_path / "work"
    proc = start(work, config, f"{RUN}/summary.json")
    log = work / LOG
    wait_for(proc, log, "phase 1 epoch 2/", 600)
    pid = job_pid(work, "train_phase")
    workers = _descendants(pid)
    assert workers, "the job has no DataLoader workers"
    for p in [pid, *workers]:                                       # what Slurm does at a time limit
        os.kill(p, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    text = log.read_text()
    assert re.search(r"SIGTERM (at|after) epoch .*: saving the resumable state, then stopping", text), text[-3000:]
    assert "killed by signal" not in text and "exited unexpectedly" not in text, text[-3000:]
    assert (work / RUN / "phase1/state.pt").exists() and not (work / RUN / "phase1/model.pt").exists()

    code, out = run_to_end(work, config, f"{RUN}/summary.json")
    assert code == 0, out
    assert "resumed at epoch" in log.read_text()
    assert (work / RUN / "phase1/model.pt").exists() and not (work / RUN / "phase1/state.pt").exists()
