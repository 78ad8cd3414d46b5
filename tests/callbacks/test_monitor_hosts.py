"""The monitor's hosts: plain loop and Fabric (``attach`` / ``step``), the Trainer's hooks with
Lightning's signatures, one probe set per seed in every host, and the same guarantees outside
a Trainer (modes, requires_grad, .grad, RNG, fault isolation, state, logging)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tests._ddp import run_in_gloo_group
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lico_lightning.callbacks import SaliencyMonitor
from lico_lightning.data import draw_probes
from lico_lightning.evaluation import evaluate_saliency
from lico_lightning.explain import EXPLAINERS, Explainer, register_explainer
from lico_lightning.metrics import SaliencyMetricOptions
from lico_lightning.testing import tiny_cnn

METRICS = ["insertion", "deletion", "overall", "average_drop"]


def _with_se(keys) -> set[str]:
    """The logged keys: each mean with its standard error (the monitors' default)."""
    keys = list(keys)
    return set(keys) | {f"{k}_se" for k in keys}


def _net() -> nn.Module:
    """Conv–BN–ReLU–conv–ReLU–pool–linear; ``"3"`` is the CAM layer."""
    return tiny_cnn(4, seed=3)


def _data(n: int = 20) -> TensorDataset:
    g = torch.Generator().manual_seed(11)
    return TensorDataset(
        torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)
    )


def _monitor(**kw) -> SaliencyMonitor:
    base = dict(
        methods=["gradcam", "rise"],
        metrics=METRICS,
        every_n_train_steps=2,
        num_probes=6,
        layer="3",
        explainer_kwargs={"rise": {"num_masks": 8, "grid_size": 3}},
        options=SaliencyMetricOptions(step_fraction=0.1, blur_kernel_size=3, blur_sigma=1.0),
        log_images=False,
    )
    base.update(kw)
    return SaliencyMonitor(**base)


def _reference(model, dataset, indices, methods=("gradcam", "rise")) -> dict[str, float]:
    images = torch.stack([dataset[i][0] for i in indices])
    labels = torch.stack([dataset[i][1] for i in indices])
    return {
        f"saliency/{k}": v
        for k, v in evaluate_saliency(
            model,
            [(images, labels)],
            list(methods),
            METRICS,
            layer="3",
            explainer_kwargs={"rise": {"num_masks": 8, "grid_size": 3}},
            options=SaliencyMetricOptions(step_fraction=0.1, blur_kernel_size=3, blur_sigma=1.0),
            progress=False,
            standard_errors=True,
        ).items()
    }


class RngEater(Explainer):
    """Consumes every global RNG and flips modes before failing."""

    uses_layer = False

    def _attribute(self, images, target):
        self.model.eval()
        torch.rand(100)
        np.random.rand(3)  # noqa: NPY002 - the legacy global RNG is what is protected
        random.random()
        raise RuntimeError("deliberate failure")


@pytest.fixture
def rng_eater():
    register_explainer("rng_eater")(RngEater)
    yield "rng_eater"
    EXPLAINERS.unregister("rng_eater")


class GradWriter(Explainer):
    """Back-propagates into the weights (as a careless input-gradient explainer would)."""

    uses_layer = False

    def _attribute(self, images, target):
        with torch.enable_grad():
            for p in self.model.parameters():
                p.requires_grad_(True)
            self.model(images).sum().backward()
        return images.abs().sum(1)


@pytest.fixture
def grad_writer():
    register_explainer("grad_writer")(GradWriter)
    yield "grad_writer"
    EXPLAINERS.unregister("grad_writer")


def test_plain_loop_backward_step_zero_grad_then_monitor_is_not_perturbed(grad_writer):
    """Issue 18 #15: the loop zeroes its gradients (to None) before monitor.step; an explainer
    that writes parameter .grad used to leave them for the next backward to add onto."""
    weights = []
    for with_monitor in (False, True):
        torch.manual_seed(0)
        model = _net().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        monitor = _monitor(methods=[grad_writer], every_n_train_steps=1) if with_monitor else None
        if monitor is not None:
            monitor.attach(model, _data())
        x, y = _data()[:8]
        for step in range(1, 4):
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            if monitor is not None:
                monitor.step(step)
                assert all(p.grad is None for p in model.parameters())
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for key, value in weights[0].items():
        assert torch.equal(weights[1][key], value), key


# ------------------------------------------------------------------ plain loop
def test_plain_loop_leaves_the_model_and_rng_untouched(rng_eater):
    model = _net().train()
    model[1].eval()  # a mixed mode must come back module by module
    model[0].weight.requires_grad_(False)
    x, y = _data()[:8]
    F.cross_entropy(model(x), y).backward()  # the loop's gradients, not yet stepped
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    np.random.seed(5)  # noqa: NPY002
    random.seed(5)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002

    monitor = _monitor(methods=["gradcam", rng_eater])
    monitor.attach(model, _data())
    with pytest.warns(UserWarning, match="'rng_eater' failed"):
        logged = monitor.step(2)

    assert set(logged) == _with_se(f"saliency/gradcam/{m}" for m in METRICS)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])  # noqa: NPY002
    assert random.getstate() == states[2]
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for name, p in model.named_parameters():
        if name in grads:
            assert torch.equal(p.grad, grads[name]), name
        else:
            assert p.grad is None, name
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key


def test_plain_loop_schedule_values_and_state(tmp_path):
    dataset, model = _data(), _net()
    monitor = _monitor()
    monitor.attach(model, DataLoader(dataset, batch_size=4))  # draws from the loader's dataset
    assert monitor.step(1) == {}
    logged = monitor.step(2)
    assert monitor.step(2) == {}  # once per step
    assert monitor.last_results == logged and monitor.num_runs == 1
    expected = _reference(model, dataset, monitor.probe_indices)
    assert logged.keys() == expected.keys()
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key

    resumed = _monitor(seed=99)  # the state wins over the arguments
    resumed.load_state_dict(monitor.state_dict())
    resumed.attach(model, dataset)
    assert resumed.step(2) == {} and resumed.step(3) == {}
    again = resumed.step(4)
    assert resumed.probe_indices == monitor.probe_indices and resumed.num_runs == 2
    assert again == pytest.approx(logged)  # same probes, same model


def test_plain_loop_epoch_schedule():
    monitor = _monitor(every_n_train_steps=None, every_n_epochs=2, methods=["gradcam"])
    monitor.attach(_net(), _data())
    assert monitor.step(5) == {}  # mid-epoch
    assert monitor.step(5, epoch=0) == {}  # epoch 0 is not due
    assert set(monitor.step(10, epoch=1)) == _with_se(f"saliency/gradcam/{m}" for m in METRICS)
    assert monitor.step(10, epoch=1) == {} and monitor.last_epoch == 1


def test_plain_loop_given_batch_probes_with_boxes_and_loggers(tmp_path):
    class Recorder:
        def __init__(self):
            self.metrics, self.images = [], []

        def log_metrics(self, metrics, step):
            self.metrics.append((step, dict(metrics)))

        def log_image(self, key, images, step):
            self.images.append((key, images[0].shape, step))

    class Writer:  # SummaryWriter's interface
        def __init__(self):
            self.scalars, self.images = [], []

        def add_scalar(self, tag, value, global_step):
            self.scalars.append((tag, global_step))

        def add_image(self, tag, image, global_step):
            self.images.append((tag, tuple(image.shape), global_step))

    images, labels = _data(4)[:]
    boxes = [torch.tensor([[0.0, 0.0, 6.0, 6.0]])] * 4
    for logger in (Recorder(), Writer()):
        monitor = _monitor(
            methods=["gradcam"],
            metrics=["insertion", "pointing_game"],
            log_images=True,
            num_images=2,
            target="label",
        )
        monitor.attach(_net(), (images, labels, boxes), logger=logger, log_dir=tmp_path)
        logged = monitor.step(2)
        assert set(logged) == _with_se(
            ["saliency/gradcam/insertion", "saliency/gradcam/pointing_game"]
        )
        if isinstance(logger, Recorder):
            assert logger.metrics == [(2, logged)]
            assert logger.images[0][0] == "saliency/overlays" and logger.images[0][1][0] == 3
        else:
            assert sorted(logger.scalars) == sorted((k, 2) for k in logged)
            ((tag, shape, _),) = logger.images
            assert tag == "saliency/overlays" and shape[0] == 3 and min(shape[1:]) >= 2 * 96
    assert not list(tmp_path.rglob("*.png"))  # the loggers took the images


def test_plain_loop_writes_png_only_under_log_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monitor = _monitor(methods=["gradcam"], log_images=True, num_images=2)
    monitor.attach(_net(), _data(), log_dir=tmp_path / "run")
    monitor.step(2)
    assert [p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*.png")] == [
        ("run", "saliency")
    ]


def test_plain_loop_bad_setup():
    monitor = _monitor()
    with pytest.raises(RuntimeError, match="attach"):
        monitor.step(2)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        monitor.attach("model", _data())
    with pytest.raises(ValueError, match="probes"):
        monitor.attach(_net())
    with pytest.raises(ValueError, match="log_dir"):
        _monitor(log_images=True).attach(_net(), _data())
    with pytest.raises(ValueError, match="model_attr"):
        _monitor(model_attr="backbone").attach(_net(), _data())
    monitor.attach(_net(), _data())
    with pytest.raises(TypeError, match="global_step"):
        monitor.step(2.0)
    with pytest.raises(TypeError, match="ProbeSet"):
        SaliencyMonitor.__mro__[1].__init__(monitor, prefix="x", probes=(1, 2))


# ------------------------------------------------------------------ plain loop, 2 processes
def _loop_worker(rank: int, world_size: int) -> dict[str, float]:
    monitor = _monitor(num_probes=7)  # shards of 4 and 3
    monitor.attach(_net(), _data())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monitor.step(2)


@pytest.mark.distributed
def test_plain_loop_under_torch_distributed_matches_single_process():
    single = _monitor(num_probes=7)
    single.attach(_net(), _data())
    expected = single.step(2)
    ranks = run_in_gloo_group(_loop_worker)
    for values in ranks:  # every rank returns the reduced values
        assert values.keys() == expected.keys()
        for key, value in expected.items():
            assert values[key] == pytest.approx(value, abs=1e-6), key


# ------------------------------------------------------------------ Fabric
def test_fabric_attach_and_step(tmp_path):
    from lightning_fabric import Fabric
    from lightning_fabric.loggers import CSVLogger

    monitor = _monitor(methods=["gradcam"], log_images=True, num_images=2)
    other = _monitor(methods=["gradcam"], every_n_train_steps=None, every_n_epochs=1)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=CSVLogger(tmp_path, name="fabric"))
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    dataset = _data()
    for m in (monitor, other):
        m.attach(model, dataset, fabric=fabric)  # looks through Fabric's wrapper
    loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=5))
    step = 0
    for epoch in range(2):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            step += 1
            for m in (monitor, other):
                m.step(step)
        for m in (monitor, other):
            m.step(step, epoch)
    fabric.logger.finalize("success")
    assert monitor.num_runs == 4 and monitor.last_step == 8
    assert other.num_runs == 2 and other.last_epoch == 1
    rows = (Path(fabric.logger.log_dir) / "metrics.csv").read_text().splitlines()
    assert "saliency/gradcam/overall" in rows[0]
    assert len(list((Path(fabric.logger.log_dir) / "saliency").glob("*.png"))) == 4
    expected = _reference(model.module, dataset, other.probe_indices, ["gradcam"])
    assert other.last_results == pytest.approx(expected, abs=1e-6)


def test_overlay_labels_are_the_probes_own_values(tmp_path, monkeypatch):
    """The per-image insertion/deletion under each tile average to the logged values, and the
    labels are the probes' classes and the model's predictions."""
    import lico_lightning.viz as viz

    seen = {}
    real = viz.render_overlays

    def spy(images, saliency, **kw):
        seen.update(kw, maps=saliency)
        return real(images, saliency, **kw)

    monkeypatch.setattr(viz, "render_overlays", spy)
    dataset, model = _data(), _net()
    monitor = _monitor(methods=["gradcam"], log_images=True, num_images=6)  # every probe shown
    monitor.attach(model, dataset, log_dir=tmp_path)
    logged = monitor.step(2)
    for short, metric in (("ins", "insertion"), ("del", "deletion")):
        per_image = seen["scores"]["gradcam"][short]
        assert per_image.shape == (6,)
        assert float(per_image.mean()) == pytest.approx(
            logged[f"saliency/gradcam/{metric}"], abs=1e-6
        )
        # the figure's note: the logged mean ± numpy's standard error of the shown values
        se = float(np.std(per_image.double().numpy(), ddof=1) / np.sqrt(6))
        assert f"{metric} {logged[f'saliency/gradcam/{metric}']:.3f} ± {se:.3f}" in seen["note"]
    assert "over 6 probes" in seen["note"]
    labels = torch.stack([dataset[i][1] for i in monitor.probe_indices])
    assert torch.equal(seen["labels"].cpu(), labels)
    with torch.no_grad():
        probs = torch.softmax(
            model.eval()(torch.stack([dataset[i][0] for i in monitor.probe_indices])), 1
        )
    assert torch.equal(seen["predictions"].cpu(), probs.argmax(1))
    assert torch.allclose(seen["probabilities"].cpu(), probs.amax(1))
    assert len(list((tmp_path / "saliency").glob("*.png"))) == 1


# ------------------------------------------------------------------ Lightning's hook signatures
def test_lightning_hooks_keep_lightnings_signatures():
    import inspect

    from pytorch_lightning.callbacks import Callback

    from lico_lightning.callbacks import ExplanationMonitor

    hooks = [
        name
        for name in vars(ExplanationMonitor)
        if name in ("setup", "teardown") or name.startswith("on_")
    ]
    assert {"setup", "on_train_batch_end", "on_train_epoch_end"} <= set(hooks)
    for name in hooks:
        ours = inspect.signature(getattr(ExplanationMonitor, name))
        lightning = inspect.signature(getattr(Callback, name))
        assert list(ours.parameters) == list(lightning.parameters), name


# ------------------------------------------------------------------ one probe draw, every host
class _Classifier(pl.LightningModule):
    def __init__(self, dataset: TensorDataset) -> None:
        super().__init__()
        self.net, self.dataset = _net(), dataset

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=5)

    def val_dataloader(self):
        return DataLoader(self.dataset, batch_size=5)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _saliency_case():
    """(monitor factory, LightningModule, datamodule or None, dataset, explained model,
    expected probe set from the dataset's own draw, probe-set comparison)."""
    from lico_lightning.callbacks import SaliencyProbes

    dataset = _data()
    module = _Classifier(dataset)

    def make(**kw):
        return _monitor(methods=["gradcam"], model_attr="net", **kw)

    def expected(seed, n):
        items = draw_probes(dataset, n, torch.Generator().manual_seed(seed))
        return SaliencyProbes(
            torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        )

    def same(a, b):
        return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)

    return make, module, None, dataset, module, expected, same


def _grounding_case():
    from lico_lightning.callbacks import GroundingMonitor, GroundingProbes
    from lico_lightning.data import ShapesCaptionDataModule
    from lico_lightning.modules import CLIPFineTuner
    from lico_lightning.text import tiny_openclip_config

    cfg = tiny_openclip_config(context_length=16)
    cfg["vision_cfg"].update(patch_size=8, layers=2)
    data = ShapesCaptionDataModule(model_cfg=cfg, num_train=8, num_val=12, batch_size=8, seed=0)
    data.setup("fit")
    module = CLIPFineTuner(model_cfg=cfg, lr=1e-3, warmup_steps=1, lr_schedule="constant")

    def make(**kw):
        return GroundingMonitor(methods=["itsm"], metrics=["pga"], log_images=False, **kw)

    def expected(seed, n):
        generator = torch.Generator().manual_seed(seed)
        return GroundingProbes.from_items(data.val_dataset.draw_probes(n, generator))

    def same(a, b):
        return (
            torch.equal(a.images, b.images)
            and (a.captions, a.phrases) == (b.captions, b.phrases)
            and torch.equal(a.boxes, b.boxes)
        )

    return make, module, data, data.val_dataset, module, expected, same


@pytest.mark.parametrize("case", [_saliency_case, _grounding_case], ids=["saliency", "grounding"])
def test_same_seed_same_probe_set_in_every_host(case, tmp_path):
    from lightning_fabric import Fabric

    make, module, datamodule, dataset, model, expected, same = case()
    seed, n = 5, 4
    reference = expected(seed, n)
    assert len(reference) == n
    assert not same(reference, expected(seed + 1, n))  # the seed matters: the test can fail

    trainer_monitor = make(seed=seed, num_probes=n, every_n_epochs=1, every_n_train_steps=None)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[trainer_monitor],
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=datamodule)
    assert trainer_monitor.num_runs == 1

    loop_monitor = make(seed=seed, num_probes=n, every_n_train_steps=1)
    loop_monitor.attach(model, dataset)
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric_monitor = make(seed=seed, num_probes=n, every_n_train_steps=1)
    fabric_monitor.attach(fabric.setup_module(model), DataLoader(dataset), fabric=fabric)
    for monitor in (loop_monitor, fabric_monitor):
        assert monitor.step(1)
        assert monitor.step(1, epoch=0) == {}  # drawn once: the loop and Fabric see one run

    for host, monitor in (("trainer", trainer_monitor), ("loop", loop_monitor)):
        assert same(monitor.probe_set, reference), host
        assert monitor.probe_indices == fabric_monitor.probe_indices, host
    assert same(fabric_monitor.probe_set, reference)
