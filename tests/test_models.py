"""Backbones, heads (Eq. 3, Eq. 4), frozen old embeddings (Sec. 3.3), imprinting and checkpoints."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ucir.checkpoint import CheckpointError, make_checkpoint, model_from_checkpoint
from ucir import models
from ucir.config import BACKBONES, HEADS, Schedule, resolve
from ucir.features import extract
from ucir.models import CosineLinear, LinearHead, build_backbone, build_model, imprint
from ucir.models.resnet_cifar import BasicBlock, CifarResNet
from ucir.models.resnet_imagenet import ResNet18Features
from ucir.train.loop import make_optimizer

torch.set_num_threads(2)


# ------------------------------------------------------------------------------------------------ CosineLinear

def test_cosine_linear_forward_by_hand():
    torch.manual_seed(0)
    head = CosineLinear(6, 4)
    with torch.no_grad():
        head.sigma.fill_(2.5)
    x = torch.randn(3, 6)
    out = head(x).detach().numpy()
    w = head.weight.detach().numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    for n in range(3):
        for i in range(4):
            dot = sum(w[i, d] * xn[n, d] for d in range(6))
            cos = dot / (math.sqrt(sum(v * v for v in w[i])) * math.sqrt(sum(v * v for v in xn[n])))
            assert out[n, i] == pytest.approx(2.5 * cos, rel=1e-5, abs=1e-6)
            assert head.cosine(x)[n, i].item() == pytest.approx(cos, rel=1e-5, abs=1e-6)


def test_cosine_linear_sigma_init_learnable_and_weight_range():
    torch.manual_seed(1)
    d = 50
    head = CosineLinear(d, 100)
    assert isinstance(head.sigma, nn.Parameter) and head.sigma.requires_grad
    assert float(head.sigma.detach()) == 1.0
    assert any(p is head.sigma for p in head.parameters())
    bound = 1 / math.sqrt(d)
    w = head.weight.detach()
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.95 * bound                   # uniform over the whole range, not a narrow one
    assert abs(float(w.mean())) < 0.05 * bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)   # std of U(-b, b)
    assert not hasattr(head, "bias") or head.bias is None
    x = torch.randn(5, d)
    F.cross_entropy(head(x), torch.tensor([0, 1, 2, 3, 4])).backward()
    assert head.sigma.grad is not None and float(head.sigma.grad) != 0.0


def test_cosine_linear_frozen_rows_used_in_forward():
    torch.manual_seed(2)
    head = CosineLinear(5, 3)
    new = torch.randn(2, 5)
    old = head.weight.detach().clone()
    head.add_classes(new, freeze_old=True)
    assert head.out_features == 5 and head.num_frozen == 3
    x = torch.randn(4, 5)
    full = torch.cat([old, new]).double()
    exp = F.normalize(x.double(), dim=1) @ F.normalize(full, dim=1).T
    torch.testing.assert_close(head(x).double(), exp * float(head.sigma.detach()), rtol=1e-5, atol=1e-6)


def _train_steps(net, steps: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = [p for p in net.parameters() if p.requires_grad]        # as ucir.train.loop.fit does
    opt, _ = make_optimizer(params, Schedule(lr=0.1, momentum=0.9, weight_decay=5e-4, milestones=[100]))
    net.train()
    for _ in range(steps):
        x = torch.randn(16, 3, 16, 16, generator=g)
        y = torch.arange(16) % num_classes                           # old AND new targets: old rows get pressure
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("freeze_old", [True, False])
def test_growth_freeze_old_rows_bit_identical(freeze_old):
    torch.manual_seed(3)
    net = build_model("resnet8", "cosine", 4, 3, last_relu=False)
    new = torch.randn(3, 64) * 0.1
    net.head.add_classes(new, freeze_old=freeze_old)
    assert net.num_classes == 7
    old_before = net.head.full_weight()[:4].detach().clone()
    new_before = net.head.full_weight()[4:].detach().clone()
    conv_before = net.backbone.conv1.weight.detach().clone()
    _train_steps(net, 4, 7)
    after = net.head.full_weight().detach()
    assert not torch.equal(after[4:], new_before)
    assert float(net.head.sigma.detach()) != 1.0
    assert not torch.equal(net.backbone.conv1.weight, conv_before)
    if freeze_old:
        assert torch.equal(after[:4], old_before)                    # no gradient, momentum or weight decay
    else:
        assert not torch.equal(after[:4], old_before)
        assert float((after[:4] - old_before).abs().max()) > 1e-4


def test_merge_then_checkpoint_round_trip(tmp_path):
    torch.manual_seed(4)
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, backbone="resnet8", source="synthetic"))
    net = build_model("resnet8", "cosine", 6, 3, last_relu=False)
    net.head.add_classes(torch.randn(2, 64), freeze_old=True)
    _train_steps(net, 2, 8)                                          # non-trivial BN statistics and weights
    net.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    full_before = net.head.full_weight().detach().clone()
    ck = make_checkpoint(net, cfg, 1, num_old=6, config={})
    assert net.head.num_frozen == 0 and net.head.weight.shape == (8, 64)
    assert torch.equal(net.head.weight.detach(), full_before)
    with torch.no_grad():
        assert torch.equal(net(x), before)
    path = tmp_path / "ck.pt"
    torch.save(ck, path)
    ck2 = torch.load(path, weights_only=True)
    assert ck2["phase"] == 1 and ck2["num_old"] == 6 and ck2["classes_seen"] == 8
    net2 = model_from_checkpoint(ck2, cfg).eval()
    with torch.no_grad():
        assert torch.equal(net2(x), before)
        assert torch.equal(net2.features(x), net.features(x))


def test_checkpoint_refuses_other_configuration():
    torch.manual_seed(5)
    cfg = resolve("lucir", dict(num_classes=10, base_classes=6, phases=2, backbone="resnet8"))
    net = build_model("resnet8", "cosine", 8, 3, last_relu=False)
    ck = make_checkpoint(net, cfg, 1, num_old=6, config={})
    model_from_checkpoint(ck, cfg)                                   # the right configuration loads
    others = [
        dict(num_classes=10, base_classes=6, phases=2, backbone="resnet14"),       # other backbone
        dict(num_classes=10, base_classes=4, phases=2, backbone="resnet8"),        # 7 classes after phase 1
        dict(num_classes=12, base_classes=6, phases=2, backbone="resnet8"),        # 9 classes after phase 1
        dict(num_classes=10, base_classes=6, phases=2, backbone="resnet8", seed=7),  # other class order
    ]
    for o in others:
        with pytest.raises(CheckpointError):
            model_from_checkpoint(ck, resolve("lucir", o))
    with pytest.raises(CheckpointError):                             # other head
        model_from_checkpoint(ck, resolve("finetune", dict(num_classes=10, base_classes=6, phases=2,
                                                           backbone="resnet8")))
    with pytest.raises(CheckpointError):                             # other phase
        model_from_checkpoint(ck, cfg, phase=2)


# ------------------------------------------------------------------------------------------------ imprinting

def test_imprint_numpy():
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(30, 8, generator=g) * torch.rand(30, 1, generator=g) * 5
    labels = torch.randint(0, 5, (30,), generator=g)
    labels[:5] = torch.arange(5)
    classes, scale = [4, 1, 3], 1.7
    got = imprint(feats, labels, classes, scale)
    f, lab = feats.numpy().astype(np.float64), labels.numpy()
    for r, c in enumerate(classes):
        rows = [f[i] / np.linalg.norm(f[i]) for i in range(len(f)) if lab[i] == c]
        mu = np.mean(rows, axis=0)
        exp = mu / np.linalg.norm(mu) * scale
        np.testing.assert_allclose(got[r].numpy(), exp, rtol=1e-5, atol=1e-6)
        assert float(got[r].norm()) == pytest.approx(scale, rel=1e-6)


def test_grow_head_imprints_rows_from_teacher_features():
    from ucir.data import load_run_data
    from ucir.train.stages import grow_head
    torch.manual_seed(7)
    cfg = resolve("lucir", dict(num_classes=6, base_classes=4, phases=1, backbone="resnet8", source="synthetic",
                                train_per_class=12, test_per_class=2, precision="fp32", eval_batch_size=7))
    data = load_run_data(cfg, torch.device("cpu"))
    net = build_model("resnet8", "cosine", 4, 3, last_relu=False)
    with torch.no_grad():
        net.head.weight.mul_(torch.tensor([0.5, 1.0, 2.0, 3.0]).unsqueeze(1))   # unequal old norms
    old_norms = net.head.weight.detach().norm(dim=1).double()
    old_rows = net.head.weight.detach().clone()
    net.train()
    with torch.no_grad():                                            # non-trivial running statistics
        net(torch.randn(8, 3, 32, 32))
    teacher = copy.deepcopy(net).eval()
    grow_head(net, teacher, cfg, data, 4, 6, torch.device("cpu"))
    w = net.head.full_weight().detach()
    assert w.shape == (6, 64) and net.head.num_frozen == 4
    assert torch.equal(w[:4], old_rows)
    mean_norm = float(old_norms.mean())                              # (0.5 + 1 + 2 + 3)/4 times the base norm
    for r in (4, 5):
        assert float(w[r].norm()) == pytest.approx(mean_norm, rel=1e-5)
    # directions: the teacher's test-transform features of every training image of each new class
    mean = torch.tensor(data.spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        for r, c in ((4, 4), (5, 5)):
            sel = [i for i in range(len(data.train.targets)) if int(data.train.targets[i]) == c]
            x = (data.train.images[sel].double() / 255 - mean.double()) / std.double()
            f = teacher.features(x.float()).double().numpy()
            fn = f / np.linalg.norm(f, axis=1, keepdims=True)
            mu = fn.mean(axis=0)
            exp = mu / np.linalg.norm(mu) * mean_norm
            np.testing.assert_allclose(w[r].numpy(), exp, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ backbones

def _expected_cifar_resnet_params(n: int, in_channels: int = 3) -> int:
    conv = lambda cin, cout, k: cin * cout * k * k                   # noqa: E731 (bias-free convolutions)
    bn = lambda c: 2 * c                                             # noqa: E731 (gamma, beta)
    total = conv(in_channels, 16, 3) + bn(16)
    cin = 16
    for cout in (16, 32, 64):
        for i in range(n):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)               # 1x1 projection shortcut
            cin = cout
    return total


def test_resnet32_architecture_and_parameter_count():
    net = CifarResNet(32, 3, last_relu=False)
    count = sum(p.numel() for p in net.parameters())
    assert count == _expected_cifar_resnet_params(5) == 466256      # ~0.46M
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 15
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for b in blocks]
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == [(16, 32, 32)] * 5 + [(32, 16, 16)] * 5 + [(64, 8, 8)] * 5
    assert out.shape == (2, 64) and net.out_dim == 64
    assert sum(p.numel() for p in CifarResNet(20).parameters()) == _expected_cifar_resnet_params(3)


def test_cifar_resnet_last_relu():
    """Only the last block loses its ReLU; the feature is the global average of that block's output."""
    torch.manual_seed(8)
    x = torch.randn(4, 3, 32, 32)
    for last_relu in (False, True):
        torch.manual_seed(8)
        net = CifarResNet(32, 3, last_relu=last_relu)
        with torch.no_grad():
            net.blocks[-1].bn2.bias.fill_(-4.0)                      # push the last pre-activation negative
        outs = []
        blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
        hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in blocks]
        with torch.no_grad():
            f = net(x)
        for h in hooks:
            h.remove()
        assert all(float(o.min()) >= 0 for o in outs[:-1])          # every other block ends with its ReLU
        torch.testing.assert_close(f, outs[-1].mean(dim=(2, 3)))
        if last_relu:
            assert float(f.min()) >= 0 and float(outs[-1].min()) >= 0
        else:
            assert float(f.min()) < 0 and float(outs[-1].min()) < 0


def test_resnet18_features():
    torch.manual_seed(9)
    x = torch.randn(2, 3, 64, 64)
    for last_relu in (False, True):
        net = ResNet18Features(3, last_relu=last_relu).eval()
        with torch.no_grad():
            f = net(x)
        assert f.shape == (2, 512) and net.out_dim == 512
        if last_relu:
            assert float(f.min()) >= 0
        else:
            assert float(f.min()) < 0
    one = ResNet18Features(1, last_relu=False).eval()
    with torch.no_grad():
        assert one(torch.randn(2, 1, 64, 64)).shape == (2, 512)
    assert build_model("resnet18", "cosine", 5).head.in_features == 512


# ------------------------------------------------------------------------------------------------ name tables

@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_provides_what_ucir_models_says(name):
    """ucir/models/__init__.py: out_dim, features N x out_dim, and last_relu=False lets them take both signs."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for last_relu in (True, False):
        torch.manual_seed(0)
        net = build_backbone(name, 3, last_relu).eval()
        with torch.no_grad():
            f = net(x)
        assert isinstance(net.out_dim, int) and f.shape == (2, net.out_dim), (name, f.shape)
        assert (float(f.min()) >= 0) == last_relu, (name, last_relu, float(f.min()))


@pytest.mark.parametrize("name", ["resnet50", "resnet110", "vgg16", "ResNet32"])
def test_a_backbone_not_in_the_table_is_an_error_naming_it_and_the_list(name):
    # resnet50 and resnet110 are 6n+2 depths: a prefix reading would have built CIFAR ResNets from them
    with pytest.raises(ValueError, match=rf"unknown backbone '{name}': one of resnet8, .*resnet32, .*resnet18"):
        build_model(name, "cosine", 4)


def test_a_backbone_without_out_dim_is_refused(monkeypatch):
    monkeypatch.setitem(models.BACKBONE_FAMILIES, "plain", lambda in_channels, last_relu: nn.Flatten())
    monkeypatch.setitem(BACKBONES, "plain1", ("plain", {}))
    with pytest.raises(ValueError, match=r"backbone 'plain1' \(Flatten\) must set out_dim.* it has None"):
        build_backbone("plain1", 3, False)
    monkeypatch.setitem(BACKBONES, "plain2", ("nowhere", {}))
    with pytest.raises(ValueError, match=r"backbone 'plain2': unknown family 'nowhere': one of cifar_resnet"):
        build_backbone("plain2", 3, False)


def test_heads_are_the_configs_names_and_an_unknown_one_is_an_error():
    assert tuple(models.HEAD_CLASSES) == HEADS
    with pytest.raises(ValueError, match=r"unknown head 'arcface': one of cosine, linear"):
        build_model("resnet8", "arcface", 4)


def test_features_of_no_images_have_the_backbones_width():
    class NoImages:
        def batches(self, indices, batch_size, train):
            return iter(())

    net = build_model("resnet8", "linear", 3)
    f, logits = extract(net, NoImages(), torch.zeros(0, dtype=torch.long), 8, torch.device("cpu"), logits=True)
    assert f.shape == (0, 64) and logits.shape == (0, 3)


# ------------------------------------------------------------------------------------------------ LinearHead

def test_linear_head_add_classes_keeps_old_weights_and_biases():
    torch.manual_seed(10)
    head = LinearHead(8, 3)
    w_old, b_old = head.weight.detach().clone(), head.bias.detach().clone()
    head.add_classes(2)
    assert head.out_features == 5 and head.weight.shape == (5, 8) and head.bias.shape == (5,)
    assert torch.equal(head.weight[:3].detach(), w_old) and torch.equal(head.bias[:3].detach(), b_old)
    assert float(head.weight[3:].detach().abs().sum()) > 0
    assert all(p.requires_grad for p in head.parameters())
    x = torch.randn(4, 8)
    out = head(x).detach().numpy()
    W, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    for n in range(4):
        for i in range(5):
            assert out[n, i] == pytest.approx(sum(W[i, d] * x[n, d].item() for d in range(8)) + b[i], abs=1e-5)
    head.merge()                                                     # no-op
    assert torch.equal(head.weight[:3].detach(), w_old)
