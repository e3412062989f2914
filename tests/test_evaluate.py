"""NME classification, accuracies, confusion matrices, average incremental accuracy, forgetting, and the NME flip."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from ucir.data.augment import hflip, normalize
from ucir.evaluate import (accuracy, class_means, confusion_matrix, nme_scores, nme_view, split_accuracy,
                           topk_accuracy)
from ucir.metrics import average_incremental_accuracy, backward_transfer, forgetting

torch.set_num_threads(2)



def nme_predict(features, means):
    """The NME classifier's prediction: the class whose mean scores highest (nearest)."""
    return nme_scores(features, means).argmax(dim=1)

def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float((v * v).sum()))


def test_class_means_plain_and_flipped_numpy():
    g = torch.Generator().manual_seed(0)
    M, D, C = 14, 5, 4
    f = torch.randn(M, D, generator=g) * 3
    ff = torch.randn(M, D, generator=g) * 0.3
    labels = torch.tensor([0, 1, 2, 3] * 3 + [1, 2])
    fn, ffn, lab = f.double().numpy(), ff.double().numpy(), labels.numpy()
    got_plain = class_means(f, labels, C).double().numpy()
    got_flip = class_means(f, labels, C, ff).double().numpy()
    for c in range(C):
        rows = [_unit(fn[i]) for i in range(M) if lab[i] == c]
        rows_f = [_unit(ffn[i]) for i in range(M) if lab[i] == c]
        mu, mu_f = sum(rows) / len(rows), sum(rows_f) / len(rows_f)
        np.testing.assert_allclose(got_plain[c], _unit(mu), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_flip[c], _unit((mu + mu_f) / 2), rtol=1e-5, atol=1e-6)


def test_class_means_empty_class_is_nan():
    f = torch.randn(4, 3)
    mu = class_means(f, torch.tensor([0, 0, 2, 2]), 3)
    assert torch.isnan(mu[1]).all() and not torch.isnan(mu[[0, 2]]).any()


def test_nme_predict_bruteforce():
    g = torch.Generator().manual_seed(1)
    C, D, N = 6, 8, 50
    means = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    feats = torch.randn(N, D, generator=g) * torch.rand(N, 1, generator=g) * 10
    got = nme_predict(feats, means).tolist()
    fm, mm = feats.double().numpy(), means.double().numpy()
    for n in range(N):
        x = _unit(fm[n])
        dists = [math.sqrt(sum((x[d] - mm[c, d]) ** 2 for d in range(D))) for c in range(C)]
        assert got[n] == int(np.argmin(dists))
        assert got[n] == int(np.argmax([float(x @ mm[c]) for c in range(C)]))   # = highest cosine
    # the feature's norm is irrelevant: only its direction is compared
    assert nme_predict(feats * 1000, means).tolist() == got


def test_nme_never_predicts_classes_without_exemplars():
    g = torch.Generator().manual_seed(2)
    D = 4
    ex = torch.randn(9, D, generator=g)
    labels = torch.tensor([0, 0, 0, 2, 2, 2, 3, 3, 3])              # class 1 has no exemplar
    means = class_means(ex, labels, 4)
    feats = torch.randn(200, D, generator=g)
    pred = nme_predict(feats, means)
    assert 1 not in pred.tolist()
    kept = means[[0, 2, 3]]
    assert pred.tolist() == [[0, 2, 3][i] for i in nme_predict(feats, kept).tolist()]


def test_split_accuracy_old_new():
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 4, 5])
    pred = torch.tensor([0, 2, 2, 3, 4, 0, 0, 1, 5, 5])
    num_old = 3
    old = [(int(p), int(t)) for p, t in zip(pred, targets) if t < num_old]
    new = [(int(p), int(t)) for p, t in zip(pred, targets) if t >= num_old]
    acc = split_accuracy(pred, targets, num_old)
    assert acc["all"] == pytest.approx(100 * 7 / 10)
    assert acc["old"] == pytest.approx(100 * sum(p == t for p, t in old) / len(old)) == pytest.approx(80.0)
    assert acc["new"] == pytest.approx(100 * sum(p == t for p, t in new) / len(new)) == pytest.approx(60.0)
    assert math.isnan(accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))


def test_confusion_matrix_loops():
    g = torch.Generator().manual_seed(3)
    C = 5
    targets = torch.randint(0, C, (60,), generator=g)
    pred = torch.randint(0, C, (60,), generator=g)
    cm = confusion_matrix(pred, targets, C)
    exp = [[0] * C for _ in range(C)]
    for p, t in zip(pred.tolist(), targets.tolist()):
        exp[t][p] += 1                                              # rows = true class, columns = predicted
    assert cm.tolist() == exp
    assert int(cm.sum()) == 60
    assert int(cm.trace()) == sum(p == t for p, t in zip(pred.tolist(), targets.tolist()))


def test_average_incremental_accuracy():
    assert average_incremental_accuracy([80.0, 60.0, 40.0, 50.0]) == pytest.approx(57.5)
    assert average_incremental_accuracy([70.0]) == 70.0


def test_forgetting_hand_made():
    acc = [[90.0],
           [70.0, 80.0],
           [75.0, 85.0, 60.0],
           [50.0, 60.0, 65.0, 88.0]]
    # group 0: best 90 -> 50 (40); group 1: best 85 -> 60 (25); group 2: best 60 -> 65 (-5); last group excluded
    assert forgetting(acc) == pytest.approx((40 + 25 - 5) / 3)
    assert math.isnan(forgetting([[90.0]]))


# ------------------------------------------------------------------------------------------------ the NME flip

def test_hflip_reverses_width_only():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 5, generator=g)
    y = hflip(x)
    for n in range(2):
        for c in range(3):
            for h in range(4):
                for w in range(5):
                    assert y[n, c, h, w] == x[n, c, h, 4 - w]
    # a colour image that is constant along the width is unchanged (the official bug reversed the channels)
    col = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 4, 5) + torch.arange(4.0).view(1, 1, 4, 1)
    assert torch.equal(hflip(col), col)
    assert torch.equal(hflip(hflip(x)), x)


def test_extract_flip_uses_real_horizontal_flip():
    from ucir.data.loaders import DeviceArrays
    from ucir.data.specs import spec_for
    from ucir.data.splits import ArraySplit
    from ucir.features import extract
    from ucir.models import build_model
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    spec = spec_for("synthetic")
    arrays = DeviceArrays(ArraySplit(images, torch.zeros(6, dtype=torch.long)), spec, torch.device("cpu"))
    net = build_model("resnet8", "cosine", 3, 3, last_relu=False).eval()
    idx = torch.tensor([4, 0, 2])
    got = extract(net, arrays, idx, 2, torch.device("cpu"), view=nme_view("horizontal", spec.mean, spec.std))
    x = images[idx].numpy().astype(np.float64) / 255
    x = (x - np.array(spec.mean).reshape(1, 3, 1, 1)) / np.array(spec.std).reshape(1, 3, 1, 1)
    x_flip = np.ascontiguousarray(x[:, :, :, ::-1])                # width reversed, channels kept
    with torch.no_grad():
        exp = net.features(torch.from_numpy(x_flip).float())
        plain = net.features(torch.from_numpy(x).float())
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    torch.testing.assert_close(extract(net, arrays, idx, 2, torch.device("cpu")), plain,
                               rtol=1e-4, atol=1e-5)


def test_channel_reversal_is_the_official_codes_flipped_version():
    """nme_flip: channels reproduces the official CIFAR code: prototypes[...][:, :, :, ::-1] on H x W x C uint8
    images, then ToTensor and Normalize; the features are those of that image, and the class means average them."""
    from ucir.data.loaders import DeviceArrays
    from ucir.data.specs import spec_for
    from ucir.data.splits import ArraySplit
    from ucir.features import extract
    from ucir.models import build_model
    torch.manual_seed(6)
    g = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8)    # N x C x H x W
    spec = spec_for("synthetic")
    hwc = images.permute(0, 2, 3, 1).numpy()                                         # the official code's layout
    official = hwc[:, :, :, ::-1].astype(np.float64) / 255                           # its "flipped version"
    official = (official - np.array(spec.mean)) / np.array(spec.std)                 # Normalize, per channel
    official = torch.from_numpy(np.ascontiguousarray(official.transpose(0, 3, 1, 2))).float()
    x = normalize(images, torch.tensor(spec.mean).view(-1, 1, 1), torch.tensor(spec.std).view(-1, 1, 1))
    view = nme_view("channels", spec.mean, spec.std)
    torch.testing.assert_close(view(x), official, rtol=0, atol=1e-5)
    assert not torch.allclose(view(x), x, atol=1e-3) and not torch.allclose(view(x), hflip(x), atol=1e-3)
    # through extract: the features of the reversed images
    arrays = DeviceArrays(ArraySplit(images, torch.zeros(5, dtype=torch.long)), spec, torch.device("cpu"))
    net = build_model("resnet8", "cosine", 3, 3, last_relu=False).eval()
    idx = torch.tensor([3, 1, 4])
    with torch.no_grad():
        exp = net.features(official[idx])
    torch.testing.assert_close(extract(net, arrays, idx, 2, torch.device("cpu"), view=view), exp,
                               rtol=1e-4, atol=1e-5)
    assert nme_view("none", spec.mean, spec.std) is None
    with pytest.raises(ValueError, match="nme_flip='vertical' is not allowed: one of horizontal, channels, none"):
        nme_view("vertical", spec.mean, spec.std)


def test_nme_flip_names_and_the_old_booleans():
    from ucir.config import ConfigError, RunConfig
    from ucir.grid import EVALUATION_PATTERN, evaluation_name
    base = dict(source="synthetic", num_classes=4, base_classes=2, phases=1, per_class=2)
    assert RunConfig.from_dict({**base, "nme_flip": True}).nme_flip == "horizontal"      # old configs
    assert RunConfig.from_dict({**base, "nme_flip": False}).nme_flip == "none"
    assert RunConfig.from_dict(base).nme_flip == "horizontal"                           # the default
    names = {f: evaluation_name(RunConfig.from_dict({**base, "nme_flip": f})) for f in ("horizontal", "channels",
                                                                                         "none")}
    # the default keeps the name (and so the results) it had; each reading its own evaluation job
    assert names == {"horizontal": "metrics", "channels": "metrics_channels", "none": "metrics_noflip"}
    assert all(re.fullmatch(EVALUATION_PATTERN, n) for n in names.values())
    assert evaluation_name(RunConfig.from_dict({**base, "per_class": 0, "nme_flip": "channels"})) == "metrics"
    for bad in (1, "flip", "true"):
        with pytest.raises(ConfigError, match=f"nme_flip={bad!r} is not allowed"):
            RunConfig.from_dict({**base, "nme_flip": bad})


# ------------------------------------------------------------------------------------- top-5 and backward transfer

def test_topk_accuracy_hand_made():
    # 7 classes; the true class's rank (1 = highest score): sample 0 rank 1, sample 1 rank 5, sample 2 rank 6
    scores = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6],
                           [7.0, 6, 5, 4, 3, 2, 1],
                           [0.0, 1, 2, 3, 4, 5, 6]])
    targets = torch.tensor([0, 4, 1])
    assert topk_accuracy(scores, targets) == pytest.approx(100 * 2 / 3)
    assert topk_accuracy(scores, targets, k=1) == pytest.approx(100 / 3)
    # 5 classes or fewer: top-5 would be 100 % by construction, so it is not reported
    assert topk_accuracy(scores[:, :5], torch.tensor([0, 4, 1])) is None


def test_nme_top5_ranks_by_distance():
    # class means on a circle; a feature at angle 0 is nearest to class 0, then 1 and 7 (45 deg), 2 and 6 (90 deg)
    ang = torch.arange(8) * math.pi / 4
    means = torch.stack([ang.cos(), ang.sin()], dim=1)
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    scores = nme_scores(feats, means)
    assert nme_predict(feats, means).tolist() == [0, 0]
    # the five nearest are {0, 1, 7, 2, 6}: class 2 is in the top 5, class 4 (180 deg) is not
    assert topk_accuracy(scores, torch.tensor([2, 4])) == pytest.approx(50.0)


def test_backward_transfer_hand_made():
    acc = [[90.0],
           [70.0, 80.0],
           [75.0, 85.0, 60.0],
           [50.0, 60.0, 65.0, 88.0]]
    # R_T,i - R_i,i: group 0 50 - 90 = -40; group 1 60 - 80 = -20; group 2 65 - 60 = +5; mean -55/3
    assert backward_transfer(acc) == pytest.approx(-18.333333333)
    # forgetting compares with the best earlier accuracy (85 for group 1), BWT with the one right after learning
    assert forgetting(acc) == pytest.approx(20.0)
    assert backward_transfer([[70.0], [72.0, 61.0]]) == pytest.approx(2.0)                 # positive transfer
    assert math.isnan(backward_transfer([[90.0]]))


def test_evaluate_phase_reports_top5_only_above_five_classes():
    from ucir.checkpoint import make_checkpoint
    from ucir.config import resolve
    from ucir.data import load_run_data
    from ucir.evaluate import evaluate_phase
    from ucir.models import build_model
    cfg = resolve("lucir", dict(dataset="syn", source="synthetic", num_classes=8, base_classes=4, phases=1,
                                seed=1993, train_per_class=6, test_per_class=5, backbone="resnet8", per_class=2))
    cpu = torch.device("cpu")
    data = load_run_data(cfg, cpu, workers=1)
    idx = data.train_indices(0, 8)
    memory = {"index": idx, "label": data.train.targets[idx]}
    torch.manual_seed(0)
    out = {}
    for phase in (0, 1):
        n = cfg.classes_seen(phase)
        net = build_model("resnet8", "cosine", n, 3, last_relu=False)
        ckpt = make_checkpoint(net, cfg, phase, cfg.classes_seen(phase - 1) if phase else 0, {})
        sel = memory["label"] < n
        out[phase] = evaluate_phase(cfg, phase, ckpt, {k: v[sel] for k, v in memory.items()}, data, cpu)
    assert out[0]["cnn_top5"] is None and out[0]["nme_top5"] is None            # 4 classes seen
    for clf in ("cnn", "nme"):
        top5 = out[1][f"{clf}_top5"]                                            # 8 classes seen
        assert top5 is not None and out[1][clf]["all"] <= top5 <= 100.0
    assert len(out[1]["cnn_groups"]) == 2
