"""SaliencyMonitor driven by a real tiny Trainer: no perturbation, schedules, resume, logging."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.evaluation import evaluate_saliency
from lico_lightning.explain import EXPLAINERS, Explainer, register_explainer
from lico_lightning.metrics import SaliencyMetricOptions


class TinyClassifier(pl.LightningModule):
    """A LightningModule written without this library: BN + dropout make perturbations visible."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x).mean((2, 3))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def _loaders(val: bool = True):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(48, 3, 12, 12, generator=g)
    y = torch.randint(0, 4, (48,), generator=g)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8, shuffle=True)
    valid = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=8) if val else None
    return train, valid


def _fit(
    tmp_path: Path,
    callbacks=(),
    *,
    max_epochs: int = 2,
    val: bool = True,
    logger=False,
    ckpt_path=None,
    **kw,
):
    pl.seed_everything(7, workers=True)
    model = TinyClassifier()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=1,
        callbacks=list(callbacks),
        **kw,
    )
    train, valid = _loaders(val)
    trainer.fit(model, train, valid, ckpt_path=ckpt_path)
    return trainer, model


def _monitor(**kw) -> SaliencyMonitor:
    base = dict(
        methods=["gradcam", "rise"],
        metrics=["insertion", "deletion", "overall", "average_drop"],
        num_probes=6,
        explainer_kwargs={"rise": {"num_masks": 8, "grid_size": 3}},
        options=SaliencyMetricOptions(step_fraction=0.1, blur_kernel_size=3, blur_sigma=1.0),
        log_images=False,
    )
    base.update(kw)
    return SaliencyMonitor(**base)


class BrokenExplainer(Explainer):
    """Misbehaves before failing: switches the model to eval and consumes the global RNG."""

    uses_layer = False

    def _attribute(self, images, target):
        self.model.eval()
        torch.rand(100)
        raise RuntimeError("deliberate failure")


@pytest.fixture
def broken():
    register_explainer("broken")(BrokenExplainer)
    yield "broken"
    EXPLAINERS.unregister("broken")


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------ no perturbation
@pytest.mark.parametrize(
    "schedule,runs",
    [({"every_n_epochs": 1}, 2), ({"every_n_train_steps": 2}, 4)],
    ids=["epoch", "step"],
)
def test_monitor_does_not_perturb_training(tmp_path, schedule, runs):
    _, reference = _fit(tmp_path / "ref")
    monitor = _monitor(**schedule, methods=["gradcam", "scorecam", "rise"])
    trainer, monitored = _fit(tmp_path / "mon", [monitor])
    _same_weights(reference, monitored)  # parameters and BN buffers, bitwise
    assert monitor.num_runs == runs
    assert set(monitor.last_results) == {
        f"saliency/{m}/{k}{se}"
        for m in ("gradcam", "scorecam", "rise")
        for k in ("insertion", "deletion", "overall", "average_drop")
        for se in ("", "_se")  # each mean with its standard error, by default
    }
    for key, value in monitor.last_results.items():
        assert key in trainer.callback_metrics
        assert float(trainer.callback_metrics[key]) == pytest.approx(value)
    # the last run saw the final weights: recompute it independently of the monitor's probe
    # drawing, batching and reduction, from the validation samples it says it drew
    _, valid = _loaders()
    probe = [valid.dataset[i] for i in monitor.probe_indices]
    batch = (torch.stack([x for x, _ in probe]), torch.stack([y for _, y in probe]))
    expected = evaluate_saliency(
        monitored,
        [batch],
        ["gradcam", "scorecam", "rise"],
        ["insertion", "deletion", "overall", "average_drop"],
        explainer_kwargs={"rise": {"num_masks": 8, "grid_size": 3}},
        options=SaliencyMetricOptions(step_fraction=0.1, blur_kernel_size=3, blur_sigma=1.0),
        progress=False,
    )
    for key, value in expected.items():
        assert monitor.last_results[f"saliency/{key}"] == pytest.approx(value, abs=1e-5), key


def test_failing_explainer_is_isolated_and_does_not_perturb(tmp_path, broken):
    _, reference = _fit(tmp_path / "ref")
    monitor = _monitor(methods=["broken", "gradcam"])
    with pytest.warns(UserWarning, match="'broken' failed"):
        trainer, monitored = _fit(tmp_path / "mon", [monitor])
    _same_weights(reference, monitored)
    assert "saliency/gradcam/overall" in trainer.callback_metrics
    assert not any(k.startswith("saliency/broken") for k in trainer.callback_metrics)


def test_no_validation_loop_runs_at_train_epoch_end(tmp_path):
    monitor = _monitor(methods=["gradcam"])
    trainer, _ = _fit(tmp_path, [monitor], val=False, limit_val_batches=0)
    assert monitor.num_runs == 2 and monitor.last_epoch == 1
    assert "saliency/gradcam/overall" in trainer.callback_metrics


def test_runs_under_inference_mode_validation_without_warnings(tmp_path):
    monitor = _monitor(methods=["gradcam", "gradcampp"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, [monitor], max_epochs=1)
    assert not [w for w in caught if "SaliencyMonitor" in str(w.message)]
    assert monitor.num_runs == 1 and len(monitor.last_results) == 16  # 8 means + their errors


# ------------------------------------------------------------------ schedules / checkpoint monitoring
def test_every_n_train_steps_logs_at_those_steps(tmp_path):
    monitor = _monitor(methods=["gradcam"], metrics=["overall"], every_n_train_steps=3)
    logger = CSVLogger(tmp_path, name="csv")
    _fit(tmp_path, [monitor], logger=logger, max_epochs=2)  # 8 steps -> runs at 3 and 6
    assert monitor.num_runs == 2 and monitor.last_step == 6
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("saliency/gradcam/overall")]
    assert [int(r["step"]) for r in rows] == [3, 6]  # written whatever `log_every_n_steps` is


def test_model_checkpoint_and_early_stopping_can_monitor(tmp_path):
    monitor = _monitor(methods=["gradcam"], metrics=["overall"])
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="saliency/gradcam/overall", mode="max"
    )
    stop = pl.callbacks.EarlyStopping(monitor="saliency/gradcam/overall", mode="max", patience=5)
    _fit(tmp_path, [monitor, ckpt, stop])
    assert ckpt.best_model_score is not None and Path(ckpt.best_model_path).exists()
    assert ckpt.current_score is not None
    assert float(ckpt.current_score) == pytest.approx(
        monitor.last_results["saliency/gradcam/overall"]
    )
    # EarlyStopping read the value too: its best (mode="max") is at least the last one
    assert torch.isfinite(stop.best_score)
    assert float(stop.best_score) >= monitor.last_results["saliency/gradcam/overall"] - 1e-6


# ------------------------------------------------------------------ resume
def test_resume_restores_probe_set_and_schedule(tmp_path):
    first = _monitor(methods=["gradcam"], metrics=["overall"], seed=1)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path, [first, ckpt], max_epochs=2)
    assert first.num_runs == 2 and first.probe_indices is not None

    resumed = _monitor(
        methods=["gradcam"], metrics=["overall"], seed=99
    )  # the state wins over the args
    trainer, _ = _fit(
        tmp_path,
        [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
        max_epochs=4,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
    )
    assert resumed.seed == 1 and resumed.probe_indices == first.probe_indices
    assert resumed.num_runs == 4 and resumed.last_epoch == 3  # ran at epochs 2 and 3 only
    assert "saliency/gradcam/overall" in trainer.callback_metrics
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"][
        first.state_key
    ]
    assert state["num_runs"] == 2 and state["last_epoch"] == 1


# ------------------------------------------------------------------ given probes, boxes, images
def test_given_probe_set_with_boxes_and_png_overlays(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 12, 12, generator=g)
    targets = torch.tensor([0, 1, 2, 3])
    boxes = [
        torch.tensor([[0.0, 0.0, 6.0, 6.0]]),
        torch.zeros(0, 4),
        torch.tensor([[2.0, 2.0, 12.0, 12.0]]),
        torch.tensor([[0.0, 0.0, 12.0, 12.0]]),
    ]
    monitor = _monitor(
        methods=["gradcam"],
        metrics=["pointing_game", "energy_pointing_game"],
        probe_images=images,
        probe_targets=targets,
        probe_boxes=boxes,
        target="label",
        options=SaliencyMetricOptions(
            step_fraction=0.1, blur_kernel_size=3, blur_sigma=1.0, tolerance=1.0
        ),
        log_images=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.2, 0.2, 0.2),
    )
    logger = CSVLogger(tmp_path, name="csv")
    _fit(tmp_path, [monitor], logger=logger, max_epochs=1)
    assert set(monitor.last_results) == {
        "saliency/gradcam/pointing_game",
        "saliency/gradcam/pointing_game_se",
        "saliency/gradcam/energy_pointing_game",
        "saliency/gradcam/energy_pointing_game_se",
    }
    assert 0 <= monitor.last_results["saliency/gradcam/pointing_game"] <= 1
    pngs = list((Path(logger.log_dir) / "saliency").glob("*.png"))
    assert len(pngs) == 1


def test_tensorboard_and_log_image_loggers(tmp_path, monkeypatch):
    calls = []

    class ImageLogger(CSVLogger):
        def log_image(self, key, images, step=None):
            calls.append((key, images[0].shape, step))

    tb = TensorBoardLogger(tmp_path, name="tb")
    added = []
    monkeypatch.setattr(
        tb.experiment,
        "add_image",
        lambda tag, img, global_step=None: added.append((tag, img.shape)),
    )
    monitor = _monitor(methods=["gradcam"], metrics=["overall"], log_images=True, num_images=2)
    _fit(tmp_path, [monitor], logger=[tb, ImageLogger(tmp_path, name="img")], max_epochs=1)
    assert len(added) == 1 and added[0][0] == "saliency/overlays" and added[0][1][0] == 3
    assert len(calls) == 1 and calls[0][0] == "saliency/overlays"
    assert not list(Path(tmp_path).rglob("*.png"))


# ------------------------------------------------------------------ bad arguments
def test_bad_arguments():
    with pytest.raises(ValueError, match="Available"):
        SaliencyMonitor(methods=["gradcamm"])
    with pytest.raises(ValueError, match="Available"):
        SaliencyMonitor(metrics=["auc"])
    with pytest.raises(ValueError, match="only one of"):
        SaliencyMonitor(every_n_epochs=1, every_n_train_steps=5)
    assert SaliencyMonitor().every_n_epochs == 1
    assert SaliencyMonitor(every_n_train_steps=5).every_n_epochs is None
    with pytest.raises(ValueError, match="together"):
        SaliencyMonitor(probe_images=torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="probe_targets"):
        SaliencyMonitor(probe_images=torch.zeros(2, 3, 4, 4), probe_targets=torch.zeros(3))
    with pytest.raises(ValueError, match="target"):
        SaliencyMonitor(target="argmax")


def test_wrong_model_attr_fails_at_setup(tmp_path):
    with pytest.raises(ValueError, match="model_attr"):
        _fit(tmp_path, [_monitor(model_attr="backbone")], max_epochs=1)


# ------------------------------------------------------------------ DDP (2 CPU processes, gloo)
class BrokenOnRank1(Explainer):
    """Fails on rank 1 only: the collective must still be reached on both ranks."""

    uses_layer = False

    def _attribute(self, images, target):
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            raise RuntimeError("rank-1 failure")
        return images.abs().sum(1)


class FrozenTiny(TinyClassifier):
    """No BN (running stats would differ per rank) and lr 0: weights equal on every rank."""

    def __init__(self) -> None:
        super().__init__(lr=0.0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )

    def setup(self, stage: str) -> None:  # runs in every spawned process
        register_explainer("broken_rank1")(BrokenOnRank1)


@pytest.mark.distributed
def test_monitor_under_two_process_ddp_matches_single_process(tmp_path):
    register_explainer("broken_rank1")(BrokenOnRank1)
    try:
        results = {}
        for name, kw in {
            "single": {"devices": 1},
            "ddp": {"devices": 2, "strategy": "ddp_spawn"},
        }.items():
            pl.seed_everything(7)
            monitor = _monitor(methods=["gradcam", "broken_rank1"], num_probes=7)
            trainer = pl.Trainer(
                max_epochs=1,
                accelerator="cpu",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=tmp_path / name,
                num_sanity_val_steps=0,
                callbacks=[monitor],
                **kw,
            )
            train, valid = _loaders()
            trainer.fit(FrozenTiny(), train, valid)
            results[name] = {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("saliency/")
            }
    finally:
        EXPLAINERS.unregister("broken_rank1")
    single, ddp = results["single"], results["ddp"]
    assert {k for k in single if k.startswith("saliency/gradcam/")} == {
        f"saliency/gradcam/{m}{se}"
        for m in ("insertion", "deletion", "overall", "average_drop")
        for se in ("", "_se")
    }
    assert any(k.startswith("saliency/broken_rank1/") for k in single)  # works without DDP
    assert not any(
        k.startswith("saliency/broken_rank1/") for k in ddp
    )  # failed on rank 1 -> not logged
    for key, value in single.items():
        if key.startswith("saliency/gradcam/"):
            assert ddp[key] == pytest.approx(value, abs=1e-5), key


# ------------------------------------------------------------------ test stage = Table 1 protocol
def test_test_stage_evaluates_the_whole_test_set_like_evaluate_saliency(tmp_path):
    from lico_lightning.evaluation import evaluate_saliency
    from lico_lightning.metrics import SaliencyMetricOptions

    monitor = _monitor(
        methods=["gradcam", "rise"], metrics=["insertion", "deletion", "overall", "pointing_game"]
    )
    with pytest.warns(UserWarning, match="need boxes"):  # once, pointing game skipped
        trainer, model = _fit(tmp_path, [monitor], max_epochs=1)
    _, valid = _loaders()
    returned = trainer.test(model, valid)[0]
    expected = evaluate_saliency(
        model,
        valid,
        ["gradcam", "rise"],
        ["insertion", "deletion", "overall"],
        explainer_kwargs={"rise": {"num_masks": 8, "grid_size": 3}},
        options=SaliencyMetricOptions(
            step_fraction=0.036,
            blur_kernel_size=3,
            blur_sigma=1.0,  # test: protocol step
        ),
        progress=False,
        standard_errors=True,  # the monitor's default
    )
    assert set(monitor.test_results) == {f"test/saliency/{k}" for k in expected}
    for key, value in expected.items():
        assert float(trainer.callback_metrics[f"test/saliency/{key}"]) == pytest.approx(
            value, abs=1e-6
        )
        assert returned[f"test/saliency/{key}"] == pytest.approx(
            value, abs=1e-6
        )  # what test() returns


def test_test_stage_shows_its_own_progress(tmp_path, capsys):
    monitor = _monitor(methods=["gradcam"], metrics=["overall"])
    _, model = _fit(tmp_path, [monitor], max_epochs=1)
    _, valid = _loaders()
    quiet = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[monitor],
        default_root_dir=tmp_path,
    )
    quiet.test(model, valid, verbose=False)
    assert "SaliencyMonitor (test)" not in capsys.readouterr().err
    shown = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=True,
        callbacks=[monitor],
        default_root_dir=tmp_path,
    )
    shown.test(model, valid, verbose=False)
    assert "SaliencyMonitor (test)" in capsys.readouterr().err
    assert "test/saliency/gradcam/overall" in shown.callback_metrics


def test_misspelt_explainer_option_fails_at_construction():
    with pytest.raises(ValueError, match=r"options of the 'rise' explainer .* but got 'num_maskz'"):
        SaliencyMonitor(methods=["rise"], explainer_kwargs={"rise": {"num_maskz": 5}})


@pytest.mark.parametrize("target", ["predicted", "label"])
def test_overlay_shows_the_prediction_without_a_forward_of_its_own(tmp_path, monkeypatch, target):
    """The overlay's predicted class and probability equal a plain softmax of the model; with
    target="predicted" they come from the evaluation's forward, so rendering runs no model."""
    import lico_lightning.viz as viz

    torch.manual_seed(0)
    model = TinyClassifier().eval()
    images, labels = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        confidence, predicted = torch.softmax(model(images), 1).max(1)

    calls = {"forward": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    shown = {}
    render = viz.render_overlays

    def capture(*args, **kwargs):
        shown.update(kwargs, forwards_in_render=calls["forward"] - shown["forwards_before"])
        return render(*args, **kwargs)

    monkeypatch.setattr(viz, "render_overlays", capture)
    monitor = SaliencyMonitor(
        methods=["gradcam"],
        metrics=["insertion"],
        every_n_train_steps=1,
        probe_images=images,
        probe_targets=labels,
        target=target,
        num_images=4,
        options=SaliencyMetricOptions(step_fraction=0.25),
    )
    original = monitor._render

    def render_counted(*args, **kwargs):
        shown["forwards_before"] = calls["forward"]
        return original(*args, **kwargs)

    monkeypatch.setattr(monitor, "_render", render_counted)
    monitor.attach(model, log_dir=tmp_path)
    assert monitor.step(1)
    assert torch.equal(shown["predictions"], predicted)
    assert torch.allclose(shown["probabilities"], confidence, atol=1e-6)
    assert shown["forwards_in_render"] == (0 if target == "predicted" else 1)
