import math

import pytest
import torch
import torch.nn.functional as F

from sensorium.objectives import ClipLoss, SigLipLoss


def test_clip_loss_known_value_on_orthogonal_pairs():
    # identical orthonormal embeddings, scale 1: logits = I, CE = log(1 + (n-1)/e) ... per row
    a = torch.eye(3)
    loss = ClipLoss()([a, a], torch.tensor(0.0))  # exp(0) = 1
    expected = -math.log(math.e / (math.e + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_matches_manual_cross_entropy():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * a @ b.T
    manual = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5)))
    assert ClipLoss()([a, b], scale).item() == pytest.approx(manual.item(), rel=1e-6)


def test_clip_loss_mask_drops_absent_pairs():
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(6, 4), dim=1), F.normalize(torch.randn(6, 4), dim=1)
    mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    full = ClipLoss()([a[mask], b[mask]], torch.tensor(1.0))
    assert ClipLoss()([a, b], torch.tensor(1.0), mask=mask).item() == pytest.approx(full.item())
    assert ClipLoss()([a, b], torch.tensor(1.0), mask=torch.zeros(6, dtype=torch.bool)).item() == 0.0


def test_siglip_groups_treat_duplicate_captions_as_positives():
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    texts = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)  # captions 0 and 1 identical
    args = ([images, texts], torch.tensor(2.0), torch.tensor(-3.0))
    plain, grouped = SigLipLoss()(*args), SigLipLoss()(*args, groups=torch.tensor([0, 0, 1]))
    assert grouped < plain  # the duplicate is no longer pushed away as a negative


def test_clip_groups_are_equivalent_for_exact_duplicates():
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    texts = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    plain = ClipLoss()([images, texts], torch.tensor(3.0))
    grouped = ClipLoss()([images, texts], torch.tensor(3.0), groups=torch.tensor([0, 0, 1]))
    assert grouped.item() == pytest.approx(plain.item(), rel=1e-5)


def test_siglip_loss_known_value():
    a = torch.eye(2)
    # logits = scale * I + bias with scale=e^0=1, bias=0: positives 1, negatives 0
    loss = SigLipLoss()([a, a], torch.tensor(0.0), torch.tensor(0.0))
    expected = (2 * -F.logsigmoid(torch.tensor(1.0)) + 2 * -F.logsigmoid(torch.tensor(0.0))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_losses_decrease_when_pairs_align():
    torch.manual_seed(2)
    a = F.normalize(torch.randn(8, 16), dim=1)
    noise = F.normalize(torch.randn(8, 16), dim=1)
    for loss_fn, extra in ((ClipLoss(), ()), (SigLipLoss(), (torch.tensor(-5.0),))):
        aligned = loss_fn([a, a], torch.tensor(math.log(20.0)), *extra)
        random = loss_fn([a, noise], torch.tensor(math.log(20.0)), *extra)
        assert aligned < random


def test_one_registry_one_signature():
    """Every registered loss takes (embeddings, logit_scale, logit_bias, mask=, groups=); the pairwise ones refuse
    a third modality and SigLIP refuses a missing bias, each with a message naming the loss."""
    from sensorium.objectives import LOSSES, build_loss

    assert set(LOSSES) == {"clip", "siglip", "symile"}
    torch.manual_seed(0)
    reps = [F.normalize(torch.randn(5, 4), dim=1) for _ in range(3)]
    scale, bias = torch.tensor(1.0), torch.tensor(-2.0)
    for name in LOSSES:
        loss = build_loss(name, local_loss=False, seed=1, negative_sampling="n_squared")
        two = loss(reps[:2], scale, bias, mask=None, groups=None)
        assert two.ndim == 0 and two.item() > 0
        as_dict = loss({"image": reps[0], "text": reps[1]}, scale, bias)
        assert torch.allclose(two, as_dict)
    with pytest.raises(ValueError, match="clip loss takes 2 embeddings"):
        build_loss("clip")(reps, scale)
    with pytest.raises(ValueError, match="siglip loss needs a logit_bias"):
        build_loss("siglip")(reps[:2], scale)
    with pytest.raises(ValueError, match="unknown loss 'sigclip'; registered: clip, siglip, symile"):
        build_loss("sigclip")
