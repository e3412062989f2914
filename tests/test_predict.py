"""Models outside the pipeline (ucir.inference, python -m ucir.predict): a phase's model classifies the run's test
images with the accuracy its metrics.json reports, CNN and NME; Fashion-MNIST-shaped images (28 x 28 grayscale,
arrays and PNG files) give a CSV with class names and scores; format-1 checkpoints still load.

The runs are made with the stage functions the workflow's scripts call, saved in the workflow's layout
(workflow/rules/common.smk); test_predict_on_the_workflows_own_run does the same on a Snakemake run of
tests/configs/tiny.yaml."""
from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ucir
from ucir.config import resolve
from ucir.data import class_order, load_run_data, load_splits
from ucir.data.sources import FASHION_MNIST_CLASSES
from ucir.deps import run_settings, stage_settings
from ucir.evaluate import evaluate_phase
from ucir.exemplars import select_exemplars
from ucir.grid import base_name, memory_name
from ucir.inference import LoadError
from ucir.io import save_json, save_torch
from ucir.predict import main as predict
from ucir.train.stages import train_base, train_phase

torch.set_num_threads(2)
CPU = torch.device("cpu")
SCHEDULE = dict(epochs=2, lr=0.1, milestones=[], batch_size=16)
SYNTHETIC = dict(dataset="syn", source="synthetic", num_classes=6, base_classes=2, phases=2, seed=1993,
                 train_per_class=16, test_per_class=10, backbone="resnet8", per_class=4, base_train=SCHEDULE,
                 train=SCHEDULE, device="cpu")


def make_run(cfg, results: Path, phases: int) -> dict[int, Path]:
    """Base model and phases 1..`phases` of a run, by the stage functions, in the workflow's layout: {phase: the
    folder holding its memory.pt and metrics.json}."""
    data = load_run_data(cfg, CPU, workers=0)
    base = results / cfg.dataset / "base" / base_name(cfg) / f"seed{cfg.seed}"
    run = results / cfg.dataset / cfg.method / "default" / f"p{cfg.phases}" / f"seed{cfg.seed}"
    ck, mem = None, None
    folders = {}
    for k in range(phases + 1):
        ck = train_base(cfg, data, CPU, print) if k == 0 else train_phase(cfg, k, ck, mem, data, CPU, print)
        mem = select_exemplars(cfg, k, ck, mem, data, CPU, print)
        metrics = evaluate_phase(cfg, k, ck, mem, data, CPU)
        metrics["config"] = stage_settings("evaluate_phase", cfg, k)            # what the workflow records
        model_dir, folder = (base, base / memory_name(cfg)) if k == 0 else (run / f"phase{k}",) * 2
        save_torch(ck, model_dir / "model.pt")
        save_torch(mem, folder / "memory.pt")
        save_json(metrics, folder / "metrics.json")
        folders[k] = folder
    save_json({"method": cfg.method, "config": run_settings(cfg)}, run / "summary.json")    # what phase 0 reads
    return folders


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    cfg = resolve("lucir", SYNTHETIC)
    folders = make_run(cfg, root / "results", phases=1)
    # the test images as the workflow sees them: original class ids, the run's test split
    _, test = load_splits("synthetic", None, num_classes=6, train_per_class=16, test_per_class=10)
    return dict(cfg=cfg, root=root, folders=folders, run=folders[1].parent, images=test.images,
                labels=test.targets)


def _seen(run, phase):
    """The test images of the classes seen after `phase` (what the evaluation scores) and their class ids."""
    ids = class_order(6, 1993)[:run["cfg"].classes_seen(phase)]
    keep = torch.isin(run["labels"], torch.tensor(ids))
    return run["images"][keep], run["labels"][keep]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("phase", [0, 1])
def test_predict_reports_the_accuracy_of_the_phases_metrics(synthetic_run, tmp_path, phase):
    """The demo's check: predict on the test images of a run (an array file and labels) gives metrics.json's
    CNN and NME accuracy; phase 0 found from the run folder through its summary.json."""
    images, labels = _seen(synthetic_run, phase)
    np.save(tmp_path / "x.npy", images.numpy())
    np.save(tmp_path / "y.npy", labels.numpy())
    acc = predict([str(synthetic_run["run"]), str(tmp_path / "x.npy"), "--phase", str(phase),
                   "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "p.csv")])
    metrics = ucir.io.load_json(synthetic_run["folders"][phase] / "metrics.json")
    assert acc == {"cnn": metrics["cnn"]["all"], "nme": metrics["nme"]["all"]}
    rows = _rows(tmp_path / "p.csv")
    assert len(rows) == metrics["num_test"] == len(labels)
    correct = sum(r["cnn_class"] == r["label"] for r in rows)
    assert correct / len(rows) * 100 == pytest.approx(metrics["cnn"]["all"])


def test_a_folder_of_png_files_with_class_subfolders(synthetic_run, tmp_path):
    """The same images as PNG files in folders named after their classes: the same predictions and accuracy."""
    m = ucir.load(synthetic_run["folders"][1])
    images, labels = _seen(synthetic_run, 1)
    folder = tmp_path / "images"
    for i, (x, y) in enumerate(zip(images, labels)):
        d = folder / m.classes[m.class_ids.index(int(y))]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    acc = predict([str(synthetic_run["folders"][1]), str(folder), "--out", str(tmp_path / "p.csv")])
    metrics = ucir.io.load_json(synthetic_run["folders"][1] / "metrics.json")
    assert acc == {"cnn": metrics["cnn"]["all"], "nme": metrics["nme"]["all"]}


def test_load_gives_names_in_output_order_normalisation_and_nme(synthetic_run):
    m = ucir.load(synthetic_run["run"], phase=1)
    assert m.class_ids == class_order(6, 1993)[:4]
    assert m.classes == [f"class{c:03d}" for c in m.class_ids]
    assert (m.mean, m.std, m.channels, m.size, m.resize) == ((0.5,) * 3, (0.25,) * 3, 3, 32, None)
    assert m.phase == 1 and m.class_means.shape == (4, 64) and not m.net.training
    s = m.scores(_seen(synthetic_run, 1)[0])
    assert s.cnn.shape == s.nme.shape == (40, 4)


def test_format_1_checkpoints_still_load(synthetic_run, tmp_path):
    """A checkpoint made before class names and normalisation were stored: they come from the dataset."""
    src = synthetic_run["folders"][1]
    ck = torch.load(src / "model.pt", weights_only=True)
    old = {k: v for k, v in ck.items() if k not in ("class_names", "input")}
    old["format_version"] = 1
    for name in ("memory.pt", "metrics.json"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    torch.save(old, tmp_path / "model.pt")
    new, legacy = ucir.load(src), ucir.load(tmp_path)
    assert legacy.classes == new.classes and legacy.mean == new.mean and legacy.size == new.size
    x = _seen(synthetic_run, 1)[0]
    assert torch.equal(legacy.scores(x).nme, new.scores(x).nme)


def test_without_exemplars_of_every_class_or_with_nme_off_it_is_the_cnn_alone(synthetic_run, tmp_path):
    m = ucir.load(synthetic_run["folders"][1], nme=False)
    assert m.class_means is None and m.scores(_seen(synthetic_run, 1)[0]).nme is None
    np.save(tmp_path / "x.npy", _seen(synthetic_run, 1)[0].numpy())
    predict([str(synthetic_run["folders"][1]), str(tmp_path / "x.npy"), "--no-nme", "--out", str(tmp_path / "p.csv")])
    assert list(_rows(tmp_path / "p.csv")[0]) == ["input", "cnn_class", "cnn_score"]


def test_mistakes_are_named(synthetic_run, tmp_path):
    folder = synthetic_run["folders"][1]
    m = ucir.load(folder, nme=False)
    with pytest.raises(LoadError, match="uint8"):
        m.scores(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(LoadError, match=r"shape \(2, 3, 28, 28\).*N x 3 x 32 x 32"):
        m.scores(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(LoadError, match="phase=5: no .*phase5; the run has phase1"):
        ucir.load(synthetic_run["run"], phase=5)
    with pytest.raises(LoadError, match="phase=1 goes with a run folder"):
        ucir.load(folder / "model.pt", phase=1)
    base = folder.parents[4] / "base" / base_name(synthetic_run["cfg"]) / "seed1993"
    (base / "random4").mkdir()
    (base / "random4" / "memory.pt").write_bytes((base / "herding4" / "memory.pt").read_bytes())
    try:
        with pytest.raises(LoadError, match=r"several memories \(herding4, random4\)"):
            ucir.load(base)
        with pytest.raises(LoadError, match="nme_flip: the run's value is not recorded"):
            ucir.load(base, memory="random4")
        means = {f: ucir.load(base, memory="random4", nme_flip=f).class_means for f in ("horizontal", "channels",
                                                                                        "none")}
        assert torch.equal(ucir.load(base, memory="random4", nme_flip=True).class_means, means["horizontal"])
        assert torch.equal(ucir.load(base, memory="random4", nme_flip=False).class_means, means["none"])
        assert not torch.equal(means["channels"], means["horizontal"])       # each its own second view
        assert not torch.equal(means["none"], means["horizontal"])
        with pytest.raises(LoadError, match="nme_flip='vertical' is not allowed: one of horizontal, channels, none"):
            ucir.load(base, memory="random4", nme_flip="vertical")
    finally:
        (base / "random4" / "memory.pt").unlink()
        (base / "random4").rmdir()
    np.save(tmp_path / "y.npy", np.array(class_order(6, 1993)[3:5]))          # the second: not seen yet
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(SystemExit, match="class ids .* not among the 4 classes"):
        predict([str(folder), str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--out", str(tmp_path / "p.csv")])


# ---- Fashion-MNIST-shaped images -----------------------------------------------------------------------------

def _write_fashion_mnist(folder: Path, per_class: int) -> None:
    """The four idx files of a small stand-in for Fashion-MNIST (random 28 x 28 images, 10 classes)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 10 * per_class), ("t10k", 10 * per_class)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">i" + "i" * array.ndim, 2051 if array.ndim == 3 else 2049, *array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    data = root / "data"
    data.mkdir()
    _write_fashion_mnist(data, per_class=6)
    cfg = resolve("lucir", dict(SYNTHETIC, dataset="fmnist", source="fashion_mnist", root=str(data), num_classes=10,
                                base_classes=6, phases=2, train_per_class=None, test_per_class=None, per_class=3,
                                base_train=dict(SCHEDULE, epochs=1), train=dict(SCHEDULE, epochs=1)))
    return dict(folders=make_run(cfg, root / "results", phases=1), data=data)


def test_fashion_mnist_shaped_pngs_and_arrays_give_names_and_scores(fashion_run, tmp_path):
    folder = fashion_run["folders"][1]
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, x in enumerate(images):
        Image.fromarray(x, mode="L").save(pngs / f"{i}.png")
    np.save(tmp_path / "x.npy", images)
    for source, out in ((pngs, "png.csv"), (tmp_path / "x.npy", "npy.csv")):
        assert predict([str(folder), str(source), "--root", str(fashion_run["data"]), "--all-scores",
                        "--out", str(tmp_path / out)]) is None                   # no labels: no accuracy
    m = ucir.load(folder, root=fashion_run["data"])
    assert m.channels == 1 and m.size == 28 and m.mean == (0.2860,) and len(m.classes) == 8
    assert set(m.classes) <= set(FASHION_MNIST_CLASSES)
    png, npy = _rows(tmp_path / "png.csv"), _rows(tmp_path / "npy.csv")
    assert [r["input"] for r in png] == [str(pngs / f"{i}.png") for i in range(5)]
    assert list(png[0]) == ["input", "cnn_class", "cnn_score", "nme_class", "nme_score",
                            *(f"cnn:{c}" for c in m.classes), *(f"nme:{c}" for c in m.classes)]
    s = m.scores(images)
    for i, (a, b) in enumerate(zip(png, npy)):                  # PNG is lossless: the same scores as the array
        assert {k: v for k, v in a.items() if k != "input"} == {k: v for k, v in b.items() if k != "input"}
        assert a["cnn_class"] == m.classes[int(s.cnn[i].argmax())]
        assert a["nme_class"] == m.classes[int(s.nme[i].argmax())]
        assert float(a["nme_score"]) == pytest.approx(float(s.nme[i].max()), rel=1e-5)
        assert [float(a[f"cnn:{c}"]) for c in m.classes] == pytest.approx(s.cnn[i].tolist(), rel=1e-5)


def test_nme_of_real_data_needs_its_root(fashion_run):
    with pytest.raises(LoadError, match="root: the NME classifier needs the exemplars' training images"):
        ucir.load(fashion_run["folders"][1])
    assert ucir.load(fashion_run["folders"][1], nme=False).class_means is None     # the CNN needs no data


# ---- a run of the workflow itself ----------------------------------------------------------------------------

@pytest.mark.workflow
def test_predict_on_the_workflows_own_run(tmp_path_factory, tmp_path):
    """tests/configs/tiny.yaml run by Snakemake (one LUCIR run, 2 phases): every phase's model, found from the run
    folder, classifies the run's test images with the CNN and NME accuracy of that phase's metrics file."""
    from smk import REPO, complete_run
    work = complete_run(REPO / "tests" / "configs" / "tiny.yaml", tmp_path_factory.mktemp("tiny")) / "work"
    run = work / "results/synthetic/lucir/default/p2/seed1993"
    metrics = {0: work / "results/synthetic/base/cosine-resnet8/seed1993/herding4/metrics.json",
               1: run / "phase1/metrics.json", 2: run / "phase2/metrics.json"}
    _, test = load_splits("synthetic", None, num_classes=6, train_per_class=16, test_per_class=8)
    for phase, path in metrics.items():
        m = ucir.io.load_json(path)
        keep = np.isin(test.targets.numpy(), m["class_order"][:m["classes_seen"]])
        np.save(tmp_path / "x.npy", test.images.numpy()[keep])
        np.save(tmp_path / "y.npy", test.targets.numpy()[keep])
        acc = predict([str(run), str(tmp_path / "x.npy"), "--phase", str(phase), "--labels", str(tmp_path / "y.npy"),
                       "--out", str(tmp_path / f"p{phase}.csv")])
        assert acc == {"cnn": m["cnn"]["all"], "nme": m["nme"]["all"]}, phase


def test_image_files_for_a_folder_data_model_take_its_test_transform(tmp_path):
    """An ImageNet model: files of any size are resized to 256 and centre-cropped to 224 (Sec. 4.1), as its
    evaluation's loader does; arrays are refused (their resizing would be a guess)."""
    from torchvision import transforms as T

    from ucir.checkpoint import FORMAT_VERSION, input_spec
    from ucir.models import build_model
    torch.manual_seed(0)
    net = build_model("resnet18", "cosine", 3, 3, last_relu=False).eval()
    ckpt = {"format_version": FORMAT_VERSION, "model": net.state_dict(), "phase": 0, "classes_seen": 3,
            "arch": {"backbone": "resnet18", "head": "cosine", "last_relu": False, "in_channels": 3, "num_classes": 3},
            "class_order": [2, 0, 1], "num_old": 0, "class_names": ["n01", "n02", "n03"],
            "input": input_spec("imagenet"),
            "config": dict(dataset="in", source="imagenet", num_classes=3, seed=1, train_per_class=None)}
    torch.save(ckpt, tmp_path / "model.pt")
    m = ucir.load(tmp_path / "model.pt", nme=False)
    assert m.classes == ["n03", "n01", "n02"] and (m.size, m.resize) == (224, 256)
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(300, 260), (240, 400)]):
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(m.mean, m.std)])
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        want = net(x)
    assert torch.allclose(m.scores(files).cnn, want, atol=1e-4)
    with pytest.raises(LoadError, match="trained on image files"):
        m.scores(np.zeros((1, 224, 224, 3), np.uint8))


def test_checkpoints_carry_the_datasets_class_names(tmp_path):
    """CIFAR-100's names come from its meta file, Fashion-MNIST's are fixed, ImageNet's are the sorted wnids;
    a checkpoint stores them by class id, and the input transform of its source."""
    from ucir.checkpoint import make_checkpoint
    from ucir.data import class_names
    from ucir.models import build_model
    from ucir.tools.startup import fake_cifar100
    fake_cifar100(tmp_path / "c", train=100, test=100)
    cfg = resolve("lucir", dict(SYNTHETIC, source="cifar100", root=str(tmp_path / "c"), num_classes=100,
                                base_classes=50, phases=5, train_per_class=None, test_per_class=None))
    ck = make_checkpoint(build_model("resnet8", "cosine", 50, 3, False), cfg, 0, 0, config={})
    assert ck["class_names"] == [f"class{i}" for i in range(100)]      # what the stand-in's meta file says
    assert ck["input"] == {"channels": 3, "size": 32, "mean": [0.5071, 0.4866, 0.4409],
                           "std": [0.2009, 0.1984, 0.2023], "resize": None}
    assert class_names("fashion_mnist", None, 10)[:2] == ["T-shirt/top", "Trouser"]
    for wnid in ("n02", "n01"):
        (tmp_path / "in" / "train" / wnid).mkdir(parents=True)
    assert class_names("imagenet", str(tmp_path / "in"), 2) == ["n01", "n02"]
    with pytest.raises(ValueError, match="need its data root"):
        class_names("cifar100", None, 100)
