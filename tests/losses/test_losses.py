"""Losses against hand computations, ignore handling, combinations, binary mode and class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segkit.errors import SegkitError
from segkit.losses import LOSSES, class_weights_from_counts, create_loss

LN2, LN3 = math.log(2), math.log(3)
IGNORE = 255

# One image of 2x2 pixels, 2 classes. Softmax probabilities of class 0 / 1:
#   a = (1/2, 1/2) target 0,  b = (3/4, 1/4) target 0,  c = (1/4, 3/4) target 1,  d ignored.
MULTI_LOGITS = torch.tensor([[[[0.0, LN3], [0.0, 5.0]], [[0.0, 0.0], [LN3, -5.0]]]])
MULTI_TARGET = torch.tensor([[[0, 0], [1, IGNORE]]])
# Binary: sigmoid probabilities a = 1/2 target 1, b = 3/4 target 1, c = 3/4 target 0, d ignored.
BINARY_LOGITS = torch.tensor([[[[0.0, LN3], [LN3, 5.0]]]])
BINARY_TARGET = torch.tensor([[[1, 1], [0, IGNORE]]])


def loss_value(spec: str, binary: bool = False, **options: object) -> float:
    logits, target = (BINARY_LOGITS, BINARY_TARGET) if binary else (MULTI_LOGITS, MULTI_TARGET)
    loss = create_loss(spec, num_classes=2, binary=binary, **options)
    return loss(logits, target).item()


def lovasz_extension(errors: list[float], foreground: list[bool]) -> float:
    """Lovász extension of the Jaccard loss Delta(S) = |S| / |G u S| (Berman et al. 2018, eq. 8),
    evaluated from its definition: errors sorted decreasingly, weighted by the increments of Delta."""
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    positives = {i for i, is_fg in enumerate(foreground) if is_fg}

    def delta(subset: set[int]) -> float:
        return len(subset) / len(positives | subset) if subset else 0.0

    total, previous = 0.0, 0.0
    for rank in range(len(order)):
        current = delta(set(order[: rank + 1]))
        total += errors[order[rank]] * (current - previous)
        previous = current
    return total


# --- hand-computed values -------------------------------------------------------------------


def test_cross_entropy() -> None:
    assert loss_value("ce") == pytest.approx((LN2 + 2 * math.log(4 / 3)) / 3, rel=1e-6)


def test_cross_entropy_class_weights() -> None:
    expected = (1 * LN2 + 1 * math.log(4 / 3) + 2 * math.log(4 / 3)) / (1 + 1 + 2)
    assert loss_value("ce", class_weights=torch.tensor([1.0, 2.0])) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_label_smoothing() -> None:
    # eps = 0.2 over 2 classes: targets (0.9, 0.1).
    smoothed = -(0.9 * math.log(3 / 4) + 0.1 * math.log(1 / 4))
    assert loss_value("ce", label_smoothing=0.2) == pytest.approx((LN2 + 2 * smoothed) / 3, rel=1e-6)


def test_cross_entropy_matches_torch_with_weights_smoothing_and_ignore() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = IGNORE
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0])
    reference = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE, label_smoothing=0.1)
    ours = create_loss("ce", num_classes=4, class_weights=weights, label_smoothing=0.1)
    torch.testing.assert_close(ours(logits, target), reference(logits, target))


def test_binary_cross_entropy() -> None:
    assert loss_value("bce", binary=True) == pytest.approx((LN2 + math.log(4 / 3) + math.log(4)) / 3, rel=1e-6)


def test_binary_cross_entropy_pos_weight_and_class_weights() -> None:
    pos = (2 * LN2 + 2 * math.log(4 / 3) + math.log(4)) / 3
    assert loss_value("bce", binary=True, pos_weight=2.0) == pytest.approx(pos, rel=1e-6)
    weighted = (3 * LN2 + 3 * math.log(4 / 3) + 1 * math.log(4)) / (3 + 3 + 1)
    assert loss_value("bce", binary=True, class_weights=[1.0, 3.0]) == pytest.approx(weighted, rel=1e-6)


def test_binary_label_smoothing_matches_two_class_softmax() -> None:
    """Targets 0.9/0.1 for eps=0.2: the same as 2-class softmax CE with eps=0.2."""
    b, c = -(0.9 * math.log(3 / 4) + 0.1 * math.log(1 / 4)), -(0.1 * math.log(3 / 4) + 0.9 * math.log(1 / 4))
    assert loss_value("bce", binary=True, label_smoothing=0.2) == pytest.approx((LN2 + b + c) / 3, rel=1e-6)
    torch.manual_seed(0)
    logit, target = torch.randn(2, 1, 3, 3), torch.randint(0, 2, (2, 3, 3))
    two_class = torch.cat([torch.zeros_like(logit), logit], dim=1)  # softmax of (0, x) is sigmoid(x)
    binary = create_loss("ce", num_classes=2, binary=True, label_smoothing=0.2)(logit, target)
    softmax = create_loss("ce", num_classes=2, label_smoothing=0.2)(two_class, target)
    torch.testing.assert_close(binary, softmax)


def test_dice() -> None:
    # class 0: I = 1/2 + 3/4, |P| = 3/2, |T| = 2 -> 5/7; class 1: I = 3/4, |P| = 3/2, |T| = 1 -> 3/5
    assert loss_value("dice") == pytest.approx(((1 - 5 / 7) + (1 - 3 / 5)) / 2, rel=1e-5)
    # binary: I = 1/2 + 3/4, |P| = 2, |T| = 2 -> 5/8
    assert loss_value("dice", binary=True) == pytest.approx(3 / 8, rel=1e-5)
    assert loss_value("dice(smooth=1)", binary=True) == pytest.approx(1 - (1.25 + 1) / (2 + 1), rel=1e-5)


def test_tversky() -> None:
    # class 0: TP 1.25, FP 0.25, FN 0.75; class 1: TP 0.75, FP 0.75, FN 0.25
    t0, t1 = 1.25 / (1.25 + 0.3 * 0.25 + 0.7 * 0.75), 0.75 / (0.75 + 0.3 * 0.75 + 0.7 * 0.25)
    assert loss_value("tversky") == pytest.approx(((1 - t0) + (1 - t1)) / 2, rel=1e-5)
    # binary: TP 1.25, FP 0.75, FN 0.75
    assert loss_value("tversky", binary=True) == pytest.approx(1 - 1.25 / (1.25 + 0.3 * 0.75 + 0.7 * 0.75), rel=1e-5)
    assert loss_value("tversky(alpha=0.5, beta=0.5)") == pytest.approx(loss_value("dice"), rel=1e-6)


def test_focal() -> None:
    expected = (0.25 * LN2 + 2 * 0.0625 * math.log(4 / 3)) / 3  # (1 - p_t)^2 * -log p_t
    assert loss_value("focal") == pytest.approx(expected, rel=1e-6)
    assert loss_value("focal(gamma=0)") == pytest.approx(loss_value("ce"), rel=1e-6)
    binary = (0.25 * 0.25 * LN2 + 0.25 * 0.0625 * math.log(4 / 3) + 0.75 * 0.5625 * math.log(4)) / 3
    assert loss_value("focal(alpha=0.25)", binary=True) == pytest.approx(binary, rel=1e-6)
    assert loss_value("focal(gamma=0)", binary=True) == pytest.approx(loss_value("bce", binary=True), rel=1e-6)


def test_ohem_keeps_only_the_hard_pixels() -> None:
    # true-class probabilities: a 1/2, b 3/4, c 3/4 (d ignored); only a is below 0.7
    assert loss_value("ohem") == pytest.approx(LN2, rel=1e-6)
    assert loss_value("ohem(threshold=0.8)") == pytest.approx(loss_value("ce"), rel=1e-6)
    assert loss_value("ohem(min_kept=1)") == pytest.approx(loss_value("ce"), rel=1e-6)  # every valid pixel kept
    # binary: a 1/2 (target 1), b 3/4 (target 1), c 1/4 (target 0: p(0) = 1/4); a and c are hard
    assert loss_value("ohem", binary=True) == pytest.approx((LN2 + math.log(4)) / 2, rel=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_focal_gradient_finite_for_small_gamma_at_confident_pixels(binary: bool) -> None:
    logits = torch.tensor([[[[40.0, -1.0]]]]) if binary else torch.tensor([[[[40.0, 0.0]], [[-40.0, 1.0]]]])
    logits.requires_grad_(True)
    target = torch.tensor([[[int(binary), 0]]])  # the first pixel is classified with p_t ~ 1
    create_loss("focal(gamma=0.5)", num_classes=2, binary=binary)(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_lovasz_by_hand() -> None:
    # softmax: errors |fg - p| are (.5, .25, .25) for both classes; each class gives 3/8.
    assert loss_value("lovasz") == pytest.approx(3 / 8, rel=1e-6)
    logits = torch.tensor([[[[2.0, -0.5], [0.5, 9.0]]]])  # hinge errors 1 - s*y: (-1, 1.5, 1.5), d ignored
    loss = create_loss("lovasz", num_classes=2, binary=True)(logits, BINARY_TARGET)
    assert loss.item() == pytest.approx(1.0, rel=1e-6)


def test_lovasz_matches_its_definition() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(1, 3, 3, 4), torch.randint(0, 3, (1, 3, 4))
    target[0, 0, :2] = IGNORE
    valid = (target != IGNORE).flatten()
    probs = logits.softmax(1).flatten(2)[0][:, valid]
    labels = target.flatten()[valid]
    per_class = [
        lovasz_extension((probs[c] - (labels == c).float()).abs().tolist(), (labels == c).tolist())
        for c in range(3)
        if (labels == c).any()
    ]
    loss = create_loss("lovasz", num_classes=3)(logits, target)
    assert loss.item() == pytest.approx(float(np.mean(per_class)), rel=1e-5)


# --- ignore handling, for every loss in both modes --------------------------------------------

MODES = [(name, binary) for name in LOSSES for binary in (False, True) if not (name == "bce" and not binary)]


def random_case(binary: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    channels = 1 if binary else 3
    logits = torch.randn(2, channels, 6, 7, generator=generator)
    target = torch.randint(0, 2 if binary else 3, (2, 6, 7), generator=generator)
    target[:, :2, :3] = IGNORE
    target[1, 4:, :] = IGNORE
    return logits, target


@pytest.mark.parametrize(("name", "binary"), MODES)
def test_ignored_pixels_change_nothing(name: str, binary: bool) -> None:
    loss_fn = create_loss(name, num_classes=2 if binary else 3, binary=binary)
    logits, target = random_case(binary)
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    logits.requires_grad_(True)
    value = loss_fn(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert logits.grad[ignored].abs().max() == 0
    assert logits.grad[~ignored].abs().max() > 0

    changed = logits.detach().clone()
    changed[ignored] = torch.randn(int(ignored.sum())) * 50
    torch.testing.assert_close(loss_fn(changed, target), value.detach())

    # Appending a block of ignored pixels changes nothing either (no dilution of the mean).
    wider_logits = torch.cat([logits.detach(), torch.randn(2, logits.shape[1], 6, 5)], dim=3)
    wider_target = torch.cat([target, torch.full((2, 6, 5), IGNORE)], dim=2)
    torch.testing.assert_close(loss_fn(wider_logits, wider_target), value.detach())


@pytest.mark.parametrize(("name", "binary"), MODES)
def test_all_ignored_gives_zero_without_nan(name: str, binary: bool) -> None:
    logits, target = random_case(binary)
    logits.requires_grad_(True)
    value = create_loss(name, num_classes=2 if binary else 3, binary=binary)(logits, torch.full_like(target, IGNORE))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- combinations, deep supervision, binary inputs ---------------------------------------------


def test_weighted_combination() -> None:
    logits, target = random_case(False)
    combined = create_loss("0.5*ce + 2*dice", num_classes=3)(logits, target)
    ce = create_loss("ce", num_classes=3)(logits, target)
    dice = create_loss("dice", num_classes=3)(logits, target)
    torch.testing.assert_close(combined, 0.5 * ce + 2 * dice)
    torch.testing.assert_close(create_loss("CE+Dice", num_classes=3)(logits, target), ce + dice)


def test_deep_supervision_sums_outputs() -> None:
    logits, target = random_case(False)
    other, _ = random_case(False, seed=1)
    loss_fn = create_loss("ce+lovasz", num_classes=3)
    torch.testing.assert_close(loss_fn([logits, other], target), loss_fn(logits, target) + loss_fn(other, target))
    torch.testing.assert_close(loss_fn((logits,), target), loss_fn(logits, target))


def test_binary_mode_from_one_class_and_channel_target() -> None:
    logits, target = random_case(True)
    by_flag = create_loss("ce+dice", num_classes=2, binary=True)(logits, target)
    by_one_class = create_loss("bce+dice", num_classes=1)(logits, target)
    torch.testing.assert_close(by_flag, by_one_class)
    torch.testing.assert_close(create_loss("ce+dice", num_classes=1)(logits, target[:, None]), by_flag)


def test_half_precision_logits_computed_in_float32() -> None:
    logits, target = random_case(False)
    loss_fn = create_loss("ce+dice", num_classes=3)
    value = loss_fn(logits.half(), target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss_fn(logits.half().float(), target))


def test_shape_mismatch_is_reported() -> None:
    logits, target = random_case(False)
    with pytest.raises(ValueError, match="expects logits"):
        create_loss("ce", num_classes=3)(logits, target[:, :3])
    with pytest.raises(ValueError, match="one logit channel"):
        create_loss("bce", num_classes=2, binary=True)(logits, target)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("cee", {}, "unknown loss 'cee' in 'cee'; available: ce, bce"),
        ("ce+", {}, "cannot parse ''"),
        ("0*ce", {}, "weight of 'ce' must be positive"),
        ("focal(g=1)", {}, "loss 'focal' has no parameter g; parameters: gamma, alpha"),
        ("focal(gamma=x)", {}, "must be a number"),
        ("focal(gamma)", {}, "expected key=value"),
        ("lovasz(per_image=1)", {}, "parameters: none"),
        ("focal(alpha=0.25)", {}, "applies to binary mode only"),
        ("focal(gamma=-1)", {}, "focal gamma must be >= 0"),
        ("tversky(gamma=0)", {}, "tversky needs alpha, beta >= 0 and gamma > 0"),
        ("bce", {}, "loss 'bce' needs binary mode"),
        ("ce", {"class_weights": [1.0, 2.0]}, "class_weights needs 3 value(s), got 2"),
        ("ce", {"class_weights": [1.0, -2.0, 1.0]}, "must not be negative"),
        ("ce", {"pos_weight": 2.0}, "pos_weight applies to binary mode only"),
        ("ce", {"binary": True}, "binary mode needs 2 classes"),
        ("ce", {"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
    ],
)
def test_spec_errors(spec: str, options: dict, message: str) -> None:
    with pytest.raises(SegkitError) as caught:
        create_loss(spec, num_classes=3, **options)
    assert message in str(caught.value)


def test_loss_buffers_follow_the_module() -> None:
    loss_fn = create_loss("ce", num_classes=3, class_weights=[1.0, 2.0, 3.0]).to(torch.float64)
    assert loss_fn.losses[0].class_weights.dtype == torch.float64


# --- class weights ---------------------------------------------------------------------------


def test_class_weights_median_frequency() -> None:
    # image 1: 60 class-0, 40 class-1 pixels; image 2: 90 class-0, 10 class-2; class 3 never appears.
    counts = np.array([[60, 40, 0, 0], [90, 0, 10, 0]])
    # freq = (150/200, 40/100, 10/100) -> median 0.4; absent class -> 0
    expected = torch.tensor([0.4 / 0.75, 1.0, 4.0, 0.0])
    torch.testing.assert_close(class_weights_from_counts(counts), expected)
    torch.testing.assert_close(class_weights_from_counts(torch.tensor(counts)), expected)


def test_class_weights_from_totals_is_inverse_frequency() -> None:
    torch.testing.assert_close(class_weights_from_counts([10, 30, 60]), torch.tensor([3.0, 1.0, 0.5]))


def test_class_weights_errors() -> None:
    with pytest.raises(SegkitError, match="no labelled pixel"):
        class_weights_from_counts([[0, 0], [0, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        class_weights_from_counts([[1, -1]])
