"""ucir.losses against the paper's equations (Sec. 3), computed independently with numpy / explicit loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ucir import losses as L

torch.set_num_threads(2)


def _softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _tau(v: np.ndarray, omega: float) -> np.ndarray:
    """tau_i(v) = v_i^{1/Omega} / sum_j v_j^{1/Omega} (Eq. 2)."""
    w = v ** (1.0 / omega)
    return w / w.sum()


# ------------------------------------------------------------------------------------------------ Eq. 2 (LwF)

@pytest.mark.parametrize("T", [1.0, 2.0, 3.5])
def test_lwf_distillation_literal_eq2(T):
    g = torch.Generator().manual_seed(0)
    n, c_old, c = 7, 5, 9
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    old_logits = torch.randn(n, c_old, generator=g, dtype=torch.float64) * 3
    total = 0.0
    for x in range(n):
        p = _softmax_np(logits[x].numpy())                 # softmax over ALL current classes
        p_star = _softmax_np(old_logits[x].numpy())        # the original model's soft label (old classes)
        t_p, t_star = _tau(p[:c_old], T), _tau(p_star, T)  # rescale + renormalise over the old classes
        total += -sum(t_star[i] * math.log(t_p[i]) for i in range(c_old))
    expected = total / n
    got = L.lwf_distillation(logits, old_logits, T)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_lwf_distillation_minimum_is_entropy_when_matching():
    # Cross-entropy(target, pred) >= entropy(target), with equality when the rescaled distributions coincide.
    g = torch.Generator().manual_seed(1)
    old = torch.randn(4, 3, generator=g, dtype=torch.float64)
    cur = torch.cat([old, torch.randn(4, 2, generator=g, dtype=torch.float64)], dim=1)
    T = 2.0
    ent = 0.0
    for x in range(4):
        t = _tau(_softmax_np(old[x].numpy()), T)
        ent += -(t * np.log(t)).sum()
    assert float(L.lwf_distillation(cur, old, T)) == pytest.approx(ent / 4, rel=1e-10)
    shifted = cur.clone()
    shifted[:, 0] += 2.0
    assert float(L.lwf_distillation(shifted, old, T)) > ent / 4 + 1e-3


# ------------------------------------------------------------------------------------------------ Eq. 5

def _score_pair(seed: int, n: int = 6, c_old: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cos_old = torch.rand(n, c_old, generator=g, dtype=torch.float64) * 2 - 1
    old_cos = torch.rand(n, c_old, generator=g, dtype=torch.float64) * 2 - 1
    return cos_old, old_cos


def test_cosine_score_distillation_official_is_the_codes_mse_times_num_old():
    """The official code: MSELoss (a mean over the N x C_old elements) times num_old_classes, i.e. the squared
    difference summed over the old classes and averaged over the batch."""
    cos_old, old_cos = _score_pair(2)
    n, c_old = cos_old.shape
    per_sample = []
    for x in range(n):
        per_sample.append(sum((float(cos_old[x, i]) - float(old_cos[x, i])) ** 2 for i in range(c_old)))
    expected = sum(per_sample) / n
    mse_times_num_old = sum(per_sample) / (n * c_old) * c_old
    got = L.cosine_score_distillation(cos_old, old_cos, "official")
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert float(got) == pytest.approx(mse_times_num_old, rel=1e-12)
    assert float(L.cosine_score_distillation(cos_old, old_cos)) == float(got)          # default = official
    assert float(L.cosine_score_distillation(cos_old, cos_old.clone(), "official")) == 0.0


def test_cosine_score_distillation_l1_is_eq5_as_printed():
    cos_old, old_cos = _score_pair(3)
    n, c_old = cos_old.shape
    total = 0.0
    for x in range(n):
        s = 0.0
        for i in range(c_old):
            s += abs(float(cos_old[x, i]) - float(old_cos[x, i]))
        total += s
    expected = total / n
    got = L.cosine_score_distillation(cos_old, old_cos, "l1")
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert float(got) > 0                                   # a loss to minimise: no leading minus sign
    assert float(L.cosine_score_distillation(cos_old, cos_old.clone(), "l1")) == 0.0


def test_cosine_score_distillation_forms_differ_in_gradient_scale():
    """Near agreement (|difference| = 0.05 everywhere) the squared form's gradient is 2 * 0.05 per score, the L1
    form's 1: a factor 10 before the weights (1 against the adaptive lambda)."""
    old_cos = _score_pair(4)[1]
    n = old_cos.shape[0]
    for form, per_score in (("official", 2 * 0.05 / n), ("l1", 1.0 / n)):
        cos_old = (old_cos + 0.05).requires_grad_(True)
        L.cosine_score_distillation(cos_old, old_cos, form).backward()
        torch.testing.assert_close(cos_old.grad, torch.full_like(old_cos, per_score), rtol=1e-12, atol=0)


def test_cosine_score_distillation_bad_form():
    cos_old, old_cos = _score_pair(5)
    with pytest.raises(ValueError):
        L.cosine_score_distillation(cos_old, old_cos, "l2")


# ------------------------------------------------------------------------------------------------ Eq. 6

def test_less_forget_explicit_normalisation():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(8, 16, generator=g, dtype=torch.float64)
    f_star = torch.randn(8, 16, generator=g, dtype=torch.float64)
    vals = []
    for x in range(8):
        a, b = f[x].numpy(), f_star[x].numpy()
        a_bar = a / math.sqrt(sum(v * v for v in a))
        b_bar = b / math.sqrt(sum(v * v for v in b))
        vals.append(1.0 - sum(a_bar[d] * b_bar[d] for d in range(16)))
    expected = sum(vals) / len(vals)
    assert float(L.less_forget(f, f_star)) == pytest.approx(expected, rel=1e-10)


def test_less_forget_scale_invariant_zero_when_equal_and_bounded():
    g = torch.Generator().manual_seed(4)
    f = torch.randn(5, 10, generator=g, dtype=torch.float64)
    f_star = torch.randn(5, 10, generator=g, dtype=torch.float64)
    base = float(L.less_forget(f, f_star))
    scales = torch.tensor([0.01, 3.0, 100.0, 0.5, 7.0], dtype=torch.float64).unsqueeze(1)
    assert float(L.less_forget(f * scales, f_star)) == pytest.approx(base, rel=1e-10)
    assert float(L.less_forget(f, f_star * scales.flip(0))) == pytest.approx(base, rel=1e-10)
    assert float(L.less_forget(f, f.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(L.less_forget(f, 2.5 * f)) == pytest.approx(0.0, abs=1e-12)
    assert float(L.less_forget(f, -f)) == pytest.approx(2.0, abs=1e-12)   # the bound L <= 2


def test_less_forget_gradient_only_to_student():
    """The teacher's features need no gradient (they come from an inference-mode model); the student's gradient is
    the analytic d/df (1 - <f_bar, g_bar>) / N = -(g_bar - <f_bar, g_bar> f_bar) / (|f| N)."""
    g = torch.Generator().manual_seed(5)
    n, d = 4, 6
    f = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():
        t = torch.randn(n, d, generator=g, dtype=torch.float64)
    teacher = t.clone()                                     # as the loop does: usable by autograd, no grad
    assert not teacher.requires_grad
    loss = L.less_forget(f, teacher)
    loss.backward()
    assert teacher.grad is None
    fn, tn = f.detach().numpy(), teacher.numpy()
    for x in range(n):
        nf = np.linalg.norm(fn[x])
        fb, tb = fn[x] / nf, tn[x] / np.linalg.norm(tn[x])
        expected = -(tb - (fb @ tb) * fb) / nf / n
        np.testing.assert_allclose(f.grad[x].numpy(), expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------ Eq. 7

def test_adaptive_lambda_rules():
    # code rule: CIFAR-100 B50, 10 new classes: 5 * sqrt(50/10) = 11.18
    assert L.adaptive_lambda(5.0, 50, 10, "code") == pytest.approx(11.180339887, rel=1e-9)
    assert L.adaptive_lambda(5.0, 50, 10) == pytest.approx(11.180339887, rel=1e-9)       # default = code
    # paper rule (Eq. 7 as printed): the inverse ratio, 5 * sqrt(10/50) = 2.236
    assert L.adaptive_lambda(5.0, 50, 10, "paper") == pytest.approx(2.2360679775, rel=1e-9)
    assert L.adaptive_lambda(5.0, 50, 10, "code") * L.adaptive_lambda(5.0, 50, 10, "paper") == pytest.approx(25.0)
    # ImageNet B50 + 5 phases of 10, lambda_base 10
    assert L.adaptive_lambda(10.0, 90, 10, "code") == pytest.approx(30.0)
    assert L.adaptive_lambda(5.0, 50, 10, "fixed") == 5.0
    assert L.adaptive_lambda(5.0, 70, 10, "fixed") == 5.0
    with pytest.raises(ValueError):
        L.adaptive_lambda(5.0, 50, 10, "other")


# ------------------------------------------------------------------------------------------------ Eq. 8-9

def _mr_loop(cos: torch.Tensor, targets: torch.Tensor, num_old: int, k: int, margin: float):
    """Per-anchor lists of hinge values (K each) and the (row, col) of positive and negatives of each pair."""
    c = cos.detach().numpy()
    per_anchor, pairs = [], []
    for x in range(c.shape[0]):
        y = int(targets[x])
        if y >= num_old:
            continue
        new_scores = [(c[x, j], j) for j in range(num_old, c.shape[1])]
        new_scores.sort(key=lambda t: -t[0])
        hinges = []
        for s, j in new_scores[:k]:
            h = max(margin - c[x, y] + s, 0.0)
            hinges.append(h)
            pairs.append((x, y, j, h))
        per_anchor.append(hinges)
    return per_anchor, pairs


def _random_cos(seed: int, n: int, c: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, generator=g, dtype=torch.float64) * 2 - 1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_margin_ranking_pairs_and_anchors_literal(k):
    n, c, num_old, margin = 12, 9, 5, 0.5
    cos = _random_cos(6 + k, n, c)
    targets = torch.tensor([0, 5, 3, 8, 1, 4, 6, 2, 7, 0, 4, 6])
    per_anchor, _ = _mr_loop(cos, targets, num_old, k, margin)
    assert len(per_anchor) == 7
    pairs_expected = sum(sum(h) for h in per_anchor) / (len(per_anchor) * k)    # official code
    anchors_expected = sum(sum(h) for h in per_anchor) / len(per_anchor)         # Eq. 9
    assert anchors_expected > 0
    got_pairs = L.margin_ranking(cos, targets, num_old, k, margin, "pairs")
    got_anchors = L.margin_ranking(cos, targets, num_old, k, margin, "anchors")
    assert float(got_pairs) == pytest.approx(pairs_expected, rel=1e-12)
    assert float(got_anchors) == pytest.approx(anchors_expected, rel=1e-12)
    assert float(got_anchors) == pytest.approx(k * float(got_pairs), rel=1e-12)
    assert float(L.margin_ranking(cos, targets, num_old, k, margin)) == float(got_pairs)   # default = pairs


def test_margin_ranking_margin_value_matters():
    cos = _random_cos(11, 10, 8)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 1])
    for m in (0.1, 0.5, 1.2):
        per_anchor, _ = _mr_loop(cos, targets, 4, 2, m)
        exp = sum(sum(h) for h in per_anchor) / (len(per_anchor) * 2)
        assert float(L.margin_ranking(cos, targets, 4, 2, m)) == pytest.approx(exp, rel=1e-12)


def test_margin_ranking_no_old_sample_is_zero_and_differentiable():
    cos = _random_cos(12, 6, 7).requires_grad_(True)
    targets = torch.tensor([4, 5, 6, 4, 5, 6])                   # all new (num_old = 4)
    for red in ("pairs", "anchors"):
        loss = L.margin_ranking(cos, targets, 4, 2, 0.5, red)
        assert float(loss.detach()) == 0.0
        assert loss.requires_grad
        cos.grad = None
        loss.backward()
        assert cos.grad is not None and torch.equal(cos.grad, torch.zeros_like(cos))


def test_margin_ranking_negatives_only_among_new_classes():
    num_old = 3
    cos = torch.tensor([[0.30, 0.99, 0.98, 0.10, 0.20, -0.5],    # anchor class 0: huge old-class scores 1, 2
                        [0.95, 0.40, 0.97, -0.3, 0.35, 0.00]],   # anchor class 1
                       dtype=torch.float64)
    targets = torch.tensor([0, 1])
    # anchor 0: new scores 0.10, 0.20, -0.5 -> top2 = 0.20, 0.10 ; pos 0.30
    # anchor 1: new scores -0.3, 0.35, 0.00 -> top2 = 0.35, 0.00 ; pos 0.40
    h = [0.5 - 0.30 + 0.20, 0.5 - 0.30 + 0.10, 0.5 - 0.40 + 0.35, 0.5 - 0.40 + 0.00]
    assert float(L.margin_ranking(cos, targets, num_old, 2, 0.5, "pairs")) == pytest.approx(sum(h) / 4)
    # if the old columns could be negatives, the loss would be far larger
    assert float(L.margin_ranking(cos, targets, num_old, 2, 0.5, "pairs")) < 0.5


def test_margin_ranking_gradients_only_on_violating_pairs():
    num_old, k, m = 2, 2, 0.5
    cos = torch.tensor([
        # anchor 0 (class 0): pos 0.9, new top-2: 0.6 (violates: 0.5-0.9+0.6=0.2), 0.3 (satisfied: -0.1)
        [0.90, 0.10, 0.60, 0.30, -0.20],
        # anchor 1 (class 1): pos 0.95, new top-2 0.2, 0.1 -> both satisfied
        [0.50, 0.95, 0.20, 0.10, -0.90],
        # a new-class sample: never an anchor
        [0.80, 0.70, 0.10, 0.90, 0.00],
        # anchor 2 (class 0): pos -0.2, new top-2 0.4, 0.1 -> both violate
        [-0.20, 0.30, 0.40, -0.60, 0.10],
    ], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 1, 3, 0])
    loss = L.margin_ranking(cos, targets, num_old, k, m, "pairs")
    expected = (0.2 + 0 + 0 + 0 + (0.5 + 0.2 + 0.4) + (0.5 + 0.2 + 0.1)) / 6
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    w = 1.0 / 6                                                   # d(mean over 3 anchors x 2 pairs)
    exp = torch.zeros_like(cos)
    exp[0, 0], exp[0, 2] = -w, w                                  # one violating pair
    exp[3, 0], exp[3, 2], exp[3, 4] = -2 * w, w, w                # two violating pairs share the positive
    torch.testing.assert_close(cos.grad, exp, rtol=1e-12, atol=1e-15)
    assert cos.grad[0, 3] == 0 and torch.all(cos.grad[1] == 0) and torch.all(cos.grad[2] == 0)
    assert cos.grad[0, 1] == 0                                    # old-class non-target column untouched

    cos.grad = None
    L.margin_ranking(cos, targets, num_old, k, m, "anchors").backward()
    torch.testing.assert_close(cos.grad, exp * k, rtol=1e-12, atol=1e-15)


def test_margin_ranking_bad_reduction():
    cos = _random_cos(13, 4, 5)
    with pytest.raises(ValueError):
        L.margin_ranking(cos, torch.tensor([0, 1, 3, 4]), 3, 2, 0.5, "sum")


def test_classification_is_mean_cross_entropy():
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    exp = 0.0
    for x in range(5):
        p = _softmax_np(logits[x].numpy())
        exp += -math.log(p[int(y[x])])
    assert float(L.classification(logits, y)) == pytest.approx(exp / 5, rel=1e-12)
