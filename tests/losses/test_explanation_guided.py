"""The explanation-loss modules call their functional forms with their options; masks are the
union of the named ground-truth keys; options are checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning.functional import gradcam_mask_penalty, right_for_the_right_reasons_loss
from lico_lightning.losses import (
    GradCAMMaskLoss,
    RightForTheRightReasonsLoss,
    create_explanation_loss,
)


def _net_and_batch():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=g, requires_grad=True)
    gt = {
        "cue_mask": torch.rand(3, 8, 8, generator=g) < 0.2,
        "distractor_mask": torch.rand(3, 8, 8, generator=g) < 0.2,
        "target_mask": torch.rand(3, 8, 8, generator=g) < 0.2,
    }
    return conv, head, x, gt


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_modules_equal_their_functions(reduction) -> None:
    conv, head, x, gt = _net_and_batch()
    y = torch.tensor([0, 2, 1])
    fmap = conv(x).relu()
    logits = head(fmap.mean((2, 3)))
    rrr = RightForTheRightReasonsLoss(weight=5.0, reduction=reduction)
    mask = rrr.mask(gt)
    assert torch.equal(mask, gt["cue_mask"] | gt["distractor_mask"])
    torch.testing.assert_close(
        rrr.penalty(x, logits, fmap, y, mask),
        right_for_the_right_reasons_loss(logits, x, mask, weight=5.0, reduction=reduction),
    )
    cam = GradCAMMaskLoss(weight=0.5, reduction=reduction, eps=1e-6)
    torch.testing.assert_close(
        cam.penalty(x, logits, fmap, y, mask),
        gradcam_mask_penalty(logits, fmap, y, mask, weight=0.5, reduction=reduction, eps=1e-6),
    )


def test_mask_keys_choose_the_union_and_report_what_is_missing() -> None:
    *_, gt = _net_and_batch()
    loss = create_explanation_loss("gradcam_mask", mask_keys="target_mask")
    assert loss.mask_keys == ("target_mask",)
    assert torch.equal(loss.mask(gt), gt["target_mask"])
    assert loss.missing_keys(gt) == []
    assert loss.missing_keys({"cue_mask": gt["cue_mask"]}) == ["target_mask"]
    assert RightForTheRightReasonsLoss().missing_keys(None) == ["cue_mask", "distractor_mask"]


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (RightForTheRightReasonsLoss, {"weight": -1.0}, "weight"),
        (RightForTheRightReasonsLoss, {"reduction": "max"}, "reduction"),
        (RightForTheRightReasonsLoss, {"mask_keys": []}, "mask_keys"),
        (GradCAMMaskLoss, {"eps": 0.0}, "eps"),
    ],
)
def test_bad_options_are_rejected(cls, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_losses_hold_no_state() -> None:
    for loss in (RightForTheRightReasonsLoss(), GradCAMMaskLoss()):
        assert loss.state_dict() == {} and list(loss.parameters()) == []
