"""LICOClassifier with pluggable explanation losses: CE, LICO, RRR, Grad-CAM mask and their
combinations from one module; masks from the batch; a clear error before training without
them; LICO state_dict keys and the frozen text encoder's exclusion unchanged."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tests._trainer import quiet_trainer

from lico_lightning.data import ShortcutDataModule
from lico_lightning.functional import gradcam_mask_penalty, right_for_the_right_reasons_loss
from lico_lightning.losses import EXPLANATION_LOSSES, GradCAMMaskLoss, RightForTheRightReasonsLoss
from lico_lightning.modules import LICOClassifier
from lico_lightning.text import tiny_openclip_config

CLASSES = ["circle", "square", "triangle"]
TINY = dict(
    backbone="wrn28_2",
    backbone_kwargs={"depth": 10},
    image_size=32,
    text_encoder="openclip",
    text_encoder_kwargs={"model_cfg": tiny_openclip_config()},
    n_ctx=4,
    mapping_hidden_dim=16,
)
GUIDED = {"rrr": {"weight": 10.0}, "gradcam_mask": {"weight": 2.0, "reduction": "mean"}}


def tiny_model(**overrides) -> LICOClassifier:
    return LICOClassifier(CLASSES, **{**TINY, **overrides})


def shortcut_batch(n: int = 4, **kwargs):
    dm = ShortcutDataModule(num_train=n, num_val=n, num_test=n, batch_size=n, **kwargs)
    dm.setup("fit")
    return next(iter(dm.train_dataloader())), dm


def test_registry_names_the_losses() -> None:
    assert EXPLANATION_LOSSES.names() == ["gradcam_mask", "rrr"]
    assert EXPLANATION_LOSSES.get("rrr") is RightForTheRightReasonsLoss
    assert EXPLANATION_LOSSES.get("gradcam_mask") is GradCAMMaskLoss


def test_terms_equal_the_functional_penalties_on_the_same_forward_pass() -> None:
    torch.manual_seed(0)
    model = tiny_model(alpha=0.0, beta=0.0, explanation_losses=GUIDED).eval()
    (images, targets, gt), _ = shortcut_batch()
    out = model.lico_losses(images, targets, gt)
    assert sorted(out) == ["ce", "gradcam_mask", "logits", "loss", "mm", "ot", "rrr"]

    x = images.clone().requires_grad_(True)
    fmap = model.backbone.forward_features(x)
    logits = model.backbone.forward_head(fmap)
    mask = gt["cue_mask"] | gt["distractor_mask"]
    rrr = right_for_the_right_reasons_loss(logits, x, mask, weight=10.0)
    cam = gradcam_mask_penalty(logits, fmap, targets, mask, weight=2.0, reduction="mean")
    ce = F.cross_entropy(logits, targets)
    torch.testing.assert_close(out["rrr"], rrr)
    torch.testing.assert_close(out["gradcam_mask"], cam)
    torch.testing.assert_close(out["loss"], ce + rrr + cam)
    assert rrr > 0 and cam > 0


def test_lico_plus_rrr_adds_the_term_to_the_unchanged_lico_loss() -> None:
    (images, targets, gt), _ = shortcut_batch()
    lico = tiny_model().eval()
    both = tiny_model(explanation_losses={"rrr": {"weight": 1.0}}).eval()
    both.load_state_dict(lico.state_dict())
    a = lico.lico_losses(images, targets)
    b = both.lico_losses(images, targets, gt)
    for key in ("ce", "mm", "ot"):
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(b["loss"], a["loss"] + b["rrr"])


def test_state_dict_keys_and_optimizer_are_those_of_the_plain_lico_model(tmp_path) -> None:
    lico = tiny_model()
    both = tiny_model(explanation_losses=GUIDED)
    assert list(lico.state_dict()) == list(both.state_dict())
    assert not any("text_encoder" in k for k in both.state_dict())
    both.trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False)
    opt = both.configure_optimizers()["optimizer"]
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not any(id(p) in in_opt for p in both.text_encoder.parameters())


def test_gradients_reach_the_backbone_but_not_the_text_encoder_or_the_masks() -> None:
    (images, targets, gt), _ = shortcut_batch()
    model = tiny_model(explanation_losses=GUIDED)
    soft = {k: v.float().requires_grad_(True) for k, v in gt.items() if k.endswith("_mask")}
    model.lico_losses(images, targets, soft)["loss"].backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert all(v.grad is None for v in soft.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_fit_on_the_shortcut_benchmark_logs_every_term(tmp_path) -> None:
    torch.manual_seed(0)
    dm = ShortcutDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
    model = tiny_model(alpha=0.0, beta=0.0, explanation_losses=GUIDED, lr=0.01)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, dm)
    logged = trainer.callback_metrics
    for key in ("train/rrr", "train/gradcam_mask", "train/ce", "val/acc"):
        assert key in logged and torch.isfinite(logged[key])
    # the checkpoint rebuilds the same terms from the hyperparameters
    trainer.save_checkpoint(tmp_path / "guided.ckpt")
    loaded = LICOClassifier.load_from_checkpoint(tmp_path / "guided.ckpt")
    assert list(loaded.explanation_losses) == ["rrr", "gradcam_mask"]
    assert loaded.explanation_losses["gradcam_mask"].reduction == "mean"
    assert loaded.explanation_losses["rrr"].weight == 10.0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_data_without_masks_fails_before_the_first_step_naming_loss_and_key(tmp_path) -> None:
    dm = ShortcutDataModule(
        num_train=8, num_val=4, num_test=4, batch_size=4, with_ground_truth=False
    )
    model = tiny_model(alpha=0.0, beta=0.0, explanation_losses={"rrr": {}})
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(
        ValueError, match=r"explanation loss 'rrr'.*missing \['cue_mask', 'distractor_mask'\]"
    ):
        trainer.fit(model, dm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match=r"missing \['hand_mask'\]"):
        (images, targets, gt), _ = shortcut_batch()
        tiny_model(
            alpha=0.0, beta=0.0, explanation_losses={"gradcam_mask": {"mask_keys": ["hand_mask"]}}
        ).lico_losses(images, targets, gt)


def test_validation_without_grad_skips_the_guided_terms() -> None:
    (images, targets, _gt), _ = shortcut_batch()
    model = tiny_model(alpha=0.0, beta=0.0, explanation_losses=GUIDED).eval()
    with torch.no_grad():
        out = model.lico_losses(images, targets)  # no ground truth needed without grad
    assert sorted(out) == ["ce", "logits", "loss", "mm", "ot"]


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"rr": {}}, ValueError, "Available: gradcam_mask, rrr"),
        ({"rrr": {"lambda_": 1.0}}, ValueError, "among"),
        ({"rrr": {"weight": -1.0}}, ValueError, "weight"),
        (["rrr"], TypeError, "mapping"),
        ({"rrr": 3.0}, TypeError, "options of explanation loss 'rrr'"),
    ],
)
def test_bad_explanation_loss_configuration_is_rejected(spec, error, match) -> None:
    with pytest.raises(error, match=match):
        tiny_model(alpha=0.0, beta=0.0, explanation_losses=spec)
