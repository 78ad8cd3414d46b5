"""Ground-truth metrics through ``evaluate_saliency`` and the ``SaliencyMonitor`` on the shortcut
benchmark: every registered ground-truth metric (and ROAD / SRG, and the model-level reliances
and group accuracy) equals its functional formula computed by hand on the same maps, the two
oracle models of ``tests/metrics/test_ground_truth.py`` are told apart by the monitor's logged
values, and data without ground truth is refused (evaluate) or skipped with a warning (monitor)
that names which metric needs what."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from tests.metrics.test_ground_truth import SIZE, CueOracle, K, TargetOracle
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from lico_lightning import functional as F
from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.data import ShortcutDataModule
from lico_lightning.evaluation import (
    MODEL_METRICS,
    evaluate_saliency,
    missing_ground_truth,
    parse_ground_truth,
)
from lico_lightning.explain import GradCAM
from lico_lightning.metrics import list_saliency_metrics

N = 12
GT_METRICS = ["evidence_share", "shortcut_share", "rank_accuracy", "intervention_correctness"]
ROAD = ["road_morf", "road_lerf", "srg"]
MODEL = ["target_reliance", "cue_reliance", "group_accuracy"]


@pytest.fixture(scope="module")
def dm() -> ShortcutDataModule:
    # cue_correlation 0.5: both agreeing and disagreeing cues among a few probes
    return ShortcutDataModule(
        num_classes=K, cue_correlation=0.5, image_size=SIZE, num_train=16, num_test=N
    )


def _nanmean(values: Tensor) -> float:
    return float(values[~values.isnan()].double().mean())


def _reference(model: nn.Module, images: Tensor, labels: Tensor, gt: dict, cf: Tensor, road: bool):
    """Every value by hand: the functional formulas on Grad-CAM maps of the predicted class,
    the object effects and reliances from per-object forward passes, group accuracy by a loop."""
    with torch.no_grad():
        logits = model(images)
        cf_logits = torch.stack([model(cf[:, o]) for o in range(cf.shape[1])], 1)  # (B, O, K)
    predicted = logits.argmax(1)
    saliency = GradCAM(model, "features").attribute(images, predicted)
    rows = torch.arange(len(images))
    effects = logits[rows, predicted][:, None] - cf_logits[rows, :, predicted]  # (B, O)
    ref = {
        "gradcam/evidence_share": _nanmean(
            F.energy_pointing_game(saliency, gt["target_mask"], reduction="none")
        ),
        "gradcam/shortcut_share": _nanmean(
            F.energy_pointing_game(saliency, gt["cue_mask"], reduction="none")
        ),
        "gradcam/rank_accuracy": _nanmean(
            F.relevance_rank_accuracy(saliency, gt["target_mask"], reduction="none")
        ),
        "gradcam/intervention_correctness": _nanmean(
            F.intervention_correctness(saliency, gt["object_masks"], effects, reduction="none")
        ),
        "target_reliance": float((logits[rows, labels] - cf_logits[rows, 0, labels]).mean()),
        "cue_reliance": float((logits[rows, labels] - cf_logits[rows, 1, labels]).mean()),
    }
    accuracies = []
    for g in range(2 * K):
        members = [i for i in range(len(images)) if int(gt["group"][i]) == g]
        if members:
            acc = sum(int(predicted[i] == labels[i]) for i in members) / len(members)
            ref[f"group_accuracy/group_{g}"] = acc
            accuracies.append(acc)
    ref["group_accuracy/worst"], ref["group_accuracy/mean"] = (
        min(accuracies),
        sum(accuracies) / len(accuracies),
    )
    if road:
        g = torch.Generator().manual_seed(0)  # the metric's seeded noise
        morf, lerf = F.road_auc(model, images, saliency, predicted, generator=g, reduction="none")
        ref.update({"gradcam/road_morf": float(morf.mean()), "gradcam/road_lerf": float(lerf.mean()),
                    "gradcam/srg": float((lerf - morf).mean())})  # fmt: skip
    return ref


@pytest.mark.parametrize("oracle", [TargetOracle, CueOracle])
def test_evaluate_saliency_logs_every_ground_truth_metric_as_its_formula(dm, oracle) -> None:
    model = oracle(dm.mean, dm.std)
    dataset = dm.make_dataset("test", with_counterfactuals=True)
    images, labels, gt = default_collate([dataset[i] for i in range(N)])
    assert gt["counterfactuals"].shape == (N, 2 + dm.num_distractors, 3, SIZE, SIZE)
    results = evaluate_saliency(
        model, DataLoader(dataset, batch_size=N), ["gradcam"], GT_METRICS + ROAD,
        layer="features", progress=False, model_metrics=MODEL,
    )  # fmt: skip
    ref = _reference(model, images, labels, gt, gt["counterfactuals"], road=True)
    assert set(results) == set(ref)
    for key, value in ref.items():
        assert results[key] == pytest.approx(value, abs=1e-5), key


def test_every_ground_truth_metric_is_registered() -> None:
    assert set(GT_METRICS + ROAD) <= set(list_saliency_metrics())
    # and "confidence", the one model metric that needs no ground truth
    # (tests/evaluation/test_confidence_model_metric.py)
    assert set(MODEL) | {"confidence"} == set(MODEL_METRICS)


def _monitor_values(dm: ShortcutDataModule, model: nn.Module) -> tuple[dict, dict]:
    monitor = SaliencyMonitor(
        ["gradcam"], GT_METRICS, every_n_train_steps=1, num_probes=N, layer="features",
        log_images=False, model_metrics=MODEL,
    )  # fmt: skip
    dataset = dm.make_dataset("test")  # no counterfactuals: the monitor renders its probes'
    monitor.attach(model, dataset)
    logged = monitor.step(1)
    probes = monitor.probe_set
    cf = torch.stack([dataset.counterfactuals(int(i)) for i in monitor.probe_indices])
    ref = _reference(model, probes.images, probes.labels, probes.ground_truth, cf, road=False)
    return logged, ref


def test_the_monitor_logs_ground_truth_and_model_metrics_that_tell_the_oracles_apart(dm) -> None:
    values = {}
    for oracle in (TargetOracle, CueOracle):
        logged, ref = _monitor_values(dm, oracle(dm.mean, dm.std))
        errors = {f"saliency/{k}_se" for k in ref if "group_accuracy" not in k}  # means only
        assert set(logged) == {f"saliency/{k}" for k in ref} | errors
        for key, value in ref.items():
            assert logged[f"saliency/{key}"] == pytest.approx(value, abs=1e-5), key
        values[oracle.__name__] = logged
    target, cue = values["TargetOracle"], values["CueOracle"]
    assert (
        target["saliency/gradcam/shortcut_share"]
        < 0.01
        < 0.99
        < cue["saliency/gradcam/shortcut_share"]
    )
    assert (
        cue["saliency/gradcam/evidence_share"]
        < 0.01
        < 0.99
        < target["saliency/gradcam/evidence_share"]
    )
    assert abs(target["saliency/cue_reliance"]) < 1e-6 and cue["saliency/cue_reliance"] > 1.0
    assert abs(cue["saliency/target_reliance"]) < 1e-6 and target["saliency/target_reliance"] > 1.0
    assert target["saliency/group_accuracy/worst"] == 1.0 and cue["saliency/group_accuracy/worst"] == 0.0  # fmt: skip


def test_ground_truth_metrics_without_ground_truth_raise_in_evaluate_and_skip_in_the_monitor() -> (
    None
):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"'shortcut_share' needs \['cue_mask'\]"):
        evaluate_saliency(net, [(images, labels)], ["gradcam"], ["insertion", "shortcut_share"],
                          layer="0", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"'cue_reliance' needs \['counterfactuals'\]"):
        evaluate_saliency(net, [(images, labels)], ["gradcam"], ["insertion"], layer="0",
                          progress=False, model_metrics=["cue_reliance"])  # fmt: skip
    with pytest.raises(ValueError, match="Expected `model_metrics` among"):
        SaliencyMonitor(["gradcam"], model_metrics=["cue_share"])
    monitor = SaliencyMonitor(["gradcam"], ["insertion", "evidence_share"], every_n_train_steps=1,
                              layer="0", log_images=False, model_metrics=["group_accuracy"])  # fmt: skip
    monitor.attach(net, (images, labels))
    with pytest.warns(
        UserWarning,
        match=r"'evidence_share' needs \['target_mask'\].*'group_accuracy' needs \['group'\]",
    ):
        logged = monitor.step(1)
    assert set(logged) == {"saliency/gradcam/insertion", "saliency/gradcam/insertion_se"}


def test_parse_ground_truth_and_what_each_metric_misses(dm) -> None:
    dataset = dm.make_dataset("test")
    batch = default_collate([dataset[i] for i in range(2)])
    gt = parse_ground_truth(batch)
    assert gt is not None and gt["object_masks"].shape == (2, 2 + dm.num_distractors, SIZE, SIZE)
    assert parse_ground_truth({"image": batch[0], "target": batch[1], "ground_truth": gt}) == gt
    assert missing_ground_truth(GT_METRICS, MODEL, gt) == {
        "intervention_correctness": ["counterfactuals"],
        "target_reliance": ["counterfactuals"],
        "cue_reliance": ["counterfactuals"],
    }
    with pytest.raises(TypeError, match="ground truth to be a mapping of"):
        parse_ground_truth((batch[0], batch[1], {"target_mask": [1, 2]}))


def test_the_monitor_logs_each_means_standard_error_over_the_probes(dm) -> None:
    model = CueOracle(dm.mean, dm.std)
    monitor = SaliencyMonitor(
        ["gradcam"], ["evidence_share", "shortcut_share", "insertion"], every_n_train_steps=1,
        num_probes=N, layer="features", log_images=False, model_metrics=["cue_reliance"],
        standard_errors=True,
    )  # fmt: skip
    dataset = dm.make_dataset("test")
    monitor.attach(model, dataset)
    logged = monitor.step(1)
    probes = monitor.probe_set
    with torch.no_grad():
        logits = model(probes.images)
        cf = torch.stack([dataset.counterfactuals(int(i), "cue")[0] for i in monitor.probe_indices])
        no_cue = model(cf)
    saliency = GradCAM(model, "features").attribute(probes.images, logits.argmax(1))
    rows = torch.arange(N)
    per_probe = {
        "gradcam/shortcut_share": F.energy_pointing_game(
            saliency, probes.ground_truth["cue_mask"], reduction="none"
        ),
        "gradcam/insertion": F.insertion_auc(
            model, probes.images, saliency, logits.argmax(1), step_fraction=0.1, reduction="none"
        ),
        "cue_reliance": logits[rows, probes.labels] - no_cue[rows, probes.labels],
    }
    for key, values in per_probe.items():
        v = values.double().numpy()
        assert logged[f"saliency/{key}"] == pytest.approx(float(v.mean()), abs=1e-5), key
        se = float(np.std(v, ddof=1) / np.sqrt(len(v)))
        assert logged[f"saliency/{key}_se"] == pytest.approx(se, rel=1e-5, abs=1e-7), key
    # evidence share is 0 on every probe of the cue oracle: a standard error of 0
    assert logged["saliency/gradcam/evidence_share_se"] == 0.0


class _Lit(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        images, labels = batch[0], batch[1]  # the third entry is the ground-truth dict
        return nn.functional.cross_entropy(self(images), labels)

    def validation_step(self, batch, batch_idx) -> None:
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_under_a_trainer_the_monitor_logs_ground_truth_and_model_metrics(tmp_path) -> None:
    data = ShortcutDataModule(num_classes=K, num_train=16, num_val=8, num_test=8, batch_size=8)
    monitor = SaliencyMonitor(
        ["gradcam"], ["shortcut_share"], every_n_epochs=1, num_probes=8, layer="net.0",
        log_images=False, model_metrics=["cue_reliance", "group_accuracy"], standard_errors=True,
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(_Lit(), data)
    logged = trainer.callback_metrics
    for key in ("gradcam/shortcut_share", "gradcam/shortcut_share_se", "cue_reliance",
                "cue_reliance_se", "group_accuracy/worst"):  # fmt: skip
        assert torch.isfinite(logged[f"saliency/{key}"]), key
    assert monitor.probe_set.ground_truth["counterfactuals"].shape[:2] == (8, 2 + 2)
