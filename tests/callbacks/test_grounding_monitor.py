"""GroundingMonitor: no perturbation with every pair explainer, fault isolation, resume, DDP,
values against a direct computation, bad input, overlays."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from tests._ddp import run_in_gloo_group

from lico_lightning.callbacks import GroundingMonitor, GroundingProbes
from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.evaluation import conditional_perturbation_curves
from lico_lightning.explain import (
    PAIR_EXPLAINERS,
    OpenCLIPDualEncoder,
    PairExplainer,
    create_pair_explainer,
    list_pair_explainers,
    register_pair_explainer,
)
from lico_lightning.functional import curve_auc, energy_pointing_game, pointing_game
from lico_lightning.modules import CLIPFineTuner
from lico_lightning.testing import tiny_clip
from lico_lightning.text import tiny_openclip_config

# a tiny CLIP with a 4x4 patch grid and 2 blocks per tower, captions of <= 16 tokens
CFG = tiny_openclip_config(context_length=16)
CFG["vision_cfg"].update(patch_size=8, layers=2)

#: tiny settings for every registered explainer (the registry's defaults are the monitor's)
TINY = {
    "integrated_jacobians": {"n_steps": 2},
    "m2ib": {"layer": -1, "steps": 2, "num_copies": 2},
    "fixlip": {"budget": 256, "interactions": "cross", "grid": (2, 2)},
}


def _data() -> ShapesCaptionDataModule:
    return ShapesCaptionDataModule(
        model_cfg=CFG, num_train=16, num_val=8, num_test=4, batch_size=8, seed=0
    )


def _fit(tmp_path: Path, callbacks=(), *, max_epochs: int = 2, ckpt_path=None, **kw):
    pl.seed_everything(3, workers=True)
    # constant LR after warmup: a 1-epoch run then resumed has the 2-epoch run's schedule
    module = CLIPFineTuner(
        model_cfg=CFG, lr=1e-3, warmup_steps=1, lr_schedule="constant", retrieval_k=(1, 5)
    )
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **kw,
    )
    trainer.fit(module, _data(), ckpt_path=ckpt_path)
    return trainer, module


def _monitor(**kw) -> GroundingMonitor:
    base = dict(
        methods=["interaction_cam"],
        metrics=["pga", "pge", "mpge", "pga_distractor"],
        num_probes=4,
        explainer_kwargs={m: TINY[m] for m in kw.get("methods", ["interaction_cam"]) if m in TINY},
        log_images=False,
    )
    base.update(kw)
    return GroundingMonitor(**base)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The unmonitored 2-epoch run (shared by the no-perturbation tests)."""
    return _fit(tmp_path_factory.mktemp("ref"))[1]


# ------------------------------------------------------------------ no perturbation
@pytest.mark.parametrize("method", list_pair_explainers())
def test_monitor_with_every_pair_explainer_does_not_perturb_training(tmp_path, reference, method):
    monitor = _monitor(methods=[method], every_n_train_steps=3)
    trainer, monitored = _fit(tmp_path, [monitor])
    _same_weights(reference, monitored)  # parameters and buffers, bitwise
    assert monitor.num_runs == 2  # steps 3 and 6 of 8
    keys = {f"grounding/{method}/{k}" for k in ("pga", "pge", "mpge", "pga_distractor")}
    # one probe is left (the others' boxes hold no patch centre): its standard error is NaN
    # and, like every NaN, not logged
    assert set(monitor.last_results) == keys
    for key in keys:
        assert key in trainer.callback_metrics


class BrokenPairExplainer(PairExplainer):
    """Misbehaves before failing: switches the model to train mode, eats the global RNG."""

    def attribute(self, images, texts):
        self.encoder.module.train()
        torch.rand(100)
        raise RuntimeError("deliberate failure")


@pytest.fixture
def broken():
    register_pair_explainer("broken_pairs")(BrokenPairExplainer)
    yield "broken_pairs"
    PAIR_EXPLAINERS.unregister("broken_pairs")


def test_failing_explainer_is_a_warning_and_the_run_is_unchanged(tmp_path, reference, broken):
    monitor = _monitor(methods=[broken, "itsm"], every_n_epochs=1)
    with pytest.warns(UserWarning, match="'broken_pairs' failed"):
        trainer, monitored = _fit(tmp_path, [monitor])
    _same_weights(reference, monitored)
    assert "grounding/itsm/pga" in trainer.callback_metrics
    assert not any(k.startswith("grounding/broken_pairs") for k in trainer.callback_metrics)


# ------------------------------------------------------------------ resume
def test_resume_continues_exactly(tmp_path):
    straight = _monitor(methods=["itsm"], seed=5)
    _, full = _fit(tmp_path / "straight", [straight], max_epochs=2)

    first = _monitor(methods=["itsm"], seed=5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "first", [first, ckpt], max_epochs=1)
    resumed = _monitor(methods=["itsm"], seed=99)  # the checkpoint's state wins
    trainer, continued = _fit(
        tmp_path / "resumed",
        [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
        max_epochs=2,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
    )
    _same_weights(full, continued)
    assert resumed.state_dict() == straight.state_dict()  # probes (pair, phrase) + schedule
    assert resumed.probe_indices == first.probe_indices and len(resumed.probe_indices) == 4
    assert resumed.last_results == straight.last_results
    assert trainer.callback_metrics["grounding/itsm/pga"] == pytest.approx(
        straight.last_results["grounding/itsm/pga"]
    )


def test_model_checkpoint_can_monitor_a_grounding_value(tmp_path):
    ckpt = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="grounding/itsm/pge", mode="max", save_top_k=1
    )
    _fit(tmp_path, [_monitor(methods=["itsm"]), ckpt], max_epochs=1)
    assert ckpt.best_model_path and ckpt.best_model_score is not None


# ------------------------------------------------------------------ values = direct computation
def _probes(n: int = 5) -> GroundingProbes:
    dm = _data()
    dm.setup("validate")
    return GroundingProbes.from_items(
        dm.val_dataset.draw_probes(n, torch.Generator().manual_seed(1))
    )


def test_logged_values_equal_a_direct_computation():
    probes = _probes()
    assert bool(probes.has_distractor.all())  # every shapes probe has the other shape's box
    metrics = ["pga", "pge", "mpge", "pga_distractor", "pge_distractor", "cid", "cii"]
    methods = ["interaction_cam", "integrated_jacobians", "m2ib"]
    model = tiny_clip(seed=1, context_length=16)
    monitor = GroundingMonitor(
        methods=methods,
        metrics=metrics,
        every_n_train_steps=1,
        probes=probes,
        explainer_kwargs={m: TINY[m] for m in methods if m in TINY},
        perturbation_steps=4,
        batch_size=2,  # batching must not change the values
        log_images=False,
    )
    monitor.attach(model)
    logged = monitor.step(1)

    # the reference: explainers and metric *functions*, no metric classes, one batch
    enc = OpenCLIPDualEncoder(model)
    tokens = enc.tokenize(probes.captions)
    spans = torch.tensor([enc.phrase_span(c, p) for c, p in zip(probes.captions, probes.phrases)])
    assert torch.equal(spans, probes.spans)
    size = tuple(probes.images.shape[-2:])
    for method in methods:
        explainer = create_pair_explainer(method, model, **TINY.get(method, {}))
        with torch.no_grad():
            result = explainer.attribute(probes.images, tokens)
        if method == "m2ib":  # no span view: the phrase explained as its own caption
            maps = explainer.attribute(probes.images, enc.tokenize(probes.phrases)).image_map()
        else:
            maps = result.span_map(spans)
        hits = pointing_game(maps, probes.boxes, tolerance=0.0, image_size=size, reduction="none")
        energy = energy_pointing_game(maps, probes.boxes, image_size=size, reduction="none")
        d_hits = pointing_game(
            maps, probes.distractor_boxes, tolerance=0, image_size=size, reduction="none"
        )
        d_energy = energy_pointing_game(
            maps, probes.distractor_boxes, image_size=size, reduction="none"
        )
        curves = {
            mode: conditional_perturbation_curves(
                enc, probes.images, tokens, result.image_map(), "image", mode, num_steps=4
            )
            for mode in ("deletion", "insertion")
        }
        expected = {
            "pga": hits.mean(),
            "pge": energy.mean(),
            "mpge": energy.sort().values[(len(energy) - 1) // 2],  # the lower median
            "pga_distractor": d_hits.mean(),
            "pge_distractor": d_energy.mean(),
            "cid": curve_auc(curves["deletion"]).mean(),
            "cii": curve_auc(curves["insertion"]).mean(),
        }
        for name, value in expected.items():
            assert logged[f"grounding/{method}/{name}"] == pytest.approx(float(value), abs=1e-5), (
                method,
                name,
            )


def test_distractor_metrics_skip_probes_without_one():
    probes = _probes(4)
    has = torch.tensor([True, False, True, False])
    probes = GroundingProbes(
        probes.images,
        probes.captions,
        probes.phrases,
        probes.boxes,
        probes.spans,
        probes.distractor_boxes,
        has,
    )
    model = tiny_clip(seed=2, context_length=16)
    monitor = GroundingMonitor(
        methods=["itsm"],
        metrics=["pga_distractor"],
        probes=probes,
        log_images=False,
        every_n_train_steps=1,
    )
    monitor.attach(model)
    logged = monitor.step(1)
    enc = OpenCLIPDualEncoder(model)
    maps = (
        create_pair_explainer("itsm", enc)
        .attribute(probes.images, enc.tokenize(probes.captions))
        .span_map(probes.spans)
    )
    want = pointing_game(maps[has], probes.distractor_boxes[has], tolerance=0, image_size=(32, 32))
    assert logged["grounding/itsm/pga_distractor"] == pytest.approx(float(want))


# ------------------------------------------------------------------ DDP (2 processes, gloo)
def _ddp_worker(rank: int, world_size: int) -> dict[str, float]:
    class BrokenOnRank1(PairExplainer):
        def attribute(self, images, texts):
            if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
                raise RuntimeError("rank-1 failure")
            return create_pair_explainer("itsm", self.encoder).attribute(images, texts)

    if "broken_rank1" not in list_pair_explainers():
        register_pair_explainer("broken_rank1")(BrokenOnRank1)
    monitor = GroundingMonitor(
        methods=["interaction_cam", "broken_rank1"],
        metrics=["pga", "pge", "mpge", "pga_distractor", "cid"],
        probes=_probes(5),  # 5 probes: ranks explain 3 and 2
        every_n_train_steps=1,
        perturbation_steps=3,
        log_images=False,
    )
    monitor.attach(tiny_clip(seed=4, context_length=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monitor.step(1)


@pytest.mark.distributed
def test_two_processes_log_the_single_process_values():
    ranks = run_in_gloo_group(_ddp_worker)
    try:
        single = _ddp_worker(0, 1)
    finally:
        PAIR_EXPLAINERS.unregister("broken_rank1")
    assert any(k.startswith("grounding/broken_rank1/") for k in single)  # works alone
    for result in ranks:
        assert not any(k.startswith("grounding/broken_rank1/") for k in result)  # failed on 1
        assert set(result) == {k for k in single if "broken_rank1" not in k}
        for key, value in result.items():
            assert value == pytest.approx(single[key], abs=1e-5), key


# ------------------------------------------------------------------ overlays
def test_overlay_png_with_captions_and_boxes(tmp_path):
    monitor = GroundingMonitor(
        methods=["interaction_cam", "itsm"],
        metrics=["pga"],
        probes=_probes(3),
        every_n_train_steps=1,
        num_images=3,
    )
    monitor.attach(tiny_clip(seed=1, context_length=16), log_dir=tmp_path)
    monitor.step(1)
    (png,) = (tmp_path / "grounding").glob("*.png")
    from PIL import Image

    with Image.open(png) as image:
        assert image.size[0] > 3 * 96 and image.size[1] > 3 * 96


# ------------------------------------------------------------------ bad input
def test_bad_input_fails_before_any_work(tmp_path):
    probes = _probes(2)
    images, boxes = probes.images, probes.boxes
    with pytest.raises(ValueError, match=r"Expected a pair explainer name.*Available: fixlip"):
        GroundingMonitor(methods=["gradcam"])
    with pytest.raises(ValueError, match=r"Expected a grounding metric name.*Available: cid"):
        GroundingMonitor(metrics=["pointing_game"])
    with pytest.raises(ValueError, match="phrase to occur in its caption"):
        GroundingProbes(images, probes.captions, ["purple dragon", "x"], boxes)
    with pytest.raises(ValueError, match="inside the 32x32 image"):
        GroundingProbes(images, probes.captions, probes.phrases, boxes + 40)
    with pytest.raises(ValueError, match="inside the 32x32 image"):
        GroundingProbes(
            images,
            probes.captions,
            probes.phrases,
            boxes,
            None,
            boxes * 0,
            torch.tensor([True, True]),
        )
    with pytest.raises(ValueError, match="to have 'box'"):
        GroundingProbes.from_items([{"image": images[0], "caption": "a dog", "phrase": "dog"}])
    with pytest.raises(ValueError, match=r"NaN|finite"):
        GroundingProbes(images * float("nan"), probes.captions, probes.phrases, boxes)
    # span out of range: caught at setup, when the tokenizer is known
    bad_span = GroundingProbes(
        images, probes.captions, probes.phrases, boxes, torch.tensor([[1, 3], [2, 30]])
    )
    monitor = GroundingMonitor(methods=["itsm"], probes=bad_span, log_images=False)
    with pytest.raises(ValueError, match="token span inside the caption of pair 1"):
        monitor.attach(tiny_clip(context_length=16))
    # not a dual encoder
    monitor = GroundingMonitor(methods=["itsm"], probes=probes, log_images=False)
    with pytest.raises(TypeError, match="Expected an open_clip CLIP"):
        monitor.attach(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`explainer_kwargs` keys"):
        GroundingMonitor(methods=["itsm"], explainer_kwargs={"m2ib": {"steps": 1}})
    with pytest.raises(ValueError, match="options of the 'itsm' pair explainer"):
        GroundingMonitor(
            methods=["itsm"],
            probes=probes,
            explainer_kwargs={"itsm": {"stepz": 1}},
            log_images=False,
        ).attach(tiny_clip(context_length=16))


def test_model_attr_reaches_a_wrapped_dual_encoder():
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Module()
            self.net.clip = tiny_clip(seed=1, context_length=16)

    holder = Holder()
    monitor = GroundingMonitor(
        methods=["itsm"],
        metrics=["pga"],
        probes=_probes(2),
        model_attr="net.clip",
        log_images=False,
        every_n_train_steps=1,
    )
    monitor.attach(holder)
    before = copy.deepcopy(holder.state_dict())
    assert set(monitor.step(1)) == {"grounding/itsm/pga", "grounding/itsm/pga_se"}
    for k, v in holder.state_dict().items():
        assert torch.equal(v, before[k])


# ------------------------------------------------------------------ the shapes recipe
def test_shapes_recipe_logs_grounding(tmp_path, monkeypatch):
    import sys

    from lico_lightning.cli import build_clip_cli

    monkeypatch.setattr(sys, "argv", ["lico-clip"])
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "clip_shapes.yaml"
    cli = build_clip_cli(
        [
            "fit",
            f"--config={recipe}",
            "--trainer.max_epochs=2",  # the recipe's monitor runs every 2nd epoch
            "--trainer.limit_train_batches=1",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.num_train=16",
            "--data.init_args.num_val=8",
            "--data.init_args.batch_size=8",
        ]
    )
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, GroundingMonitor)]
    assert monitor.num_runs == 1 and len(monitor.probe_indices) == 8  # one phrase per scene
    for method in ("interaction_cam", "integrated_jacobians"):
        for metric in ("pga", "pge", "mpge", "pga_distractor", "pge_distractor"):
            assert f"grounding/{method}/{metric}" in cli.trainer.callback_metrics
    assert list(tmp_path.glob("clip_shapes/version_*/grounding/*.png"))  # the overlay


def test_readme_grounding_snippet_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Watch CLIP's grounding while it trains", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert "grounding/interaction_cam/pga_distractor" in namespace["trainer"].callback_metrics
    assert list((tmp_path / "runs" / "grounding" / "grounding").glob("*.png"))
