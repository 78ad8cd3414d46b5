"""CLIPFineTuner under Lightning's FSDPStrategy, and the GroundingMonitor explaining the whole
(gathered) model on it without perturbing the sharded training state.

Where each part runs:

* 2 CPU processes (gloo), marker ``distributed``: Lightning's ``FSDPStrategy`` through the
  test-only subclass :class:`_CPUFSDPStrategy` below. Lightning itself refuses FSDP on CPU at
  two places (see the class); everything else — torch's ``FullyShardedDataParallel`` with
  Lightning's defaults (full sharding, ``use_orig_params=True``), the forward redirection of
  ``training_step``, the optimizer set-up, checkpoint-free fitting — is Lightning's and torch's.
  Checked: a monitored run trains bit for bit as an unmonitored one (also the sharded state
  around each monitor run), the logged values equal the unsharded model's with the same weights
  (one FSDP unit, one per block, LoRA), and FSDP trains as DDP does (1e-5).
* CUDA: Lightning's own ``Trainer(strategy="fsdp", accelerator="cuda")`` on up to 2 GPUs in
  this process (1 GPU: one shard of the whole model, the same gather code path); skipped
  without a GPU. Run standalone: ``pytest tests/modules/test_clip_fsdp.py -q``.
"""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy, Strategy
from tests._ddp import run_in_gloo_group
from torch.distributed.fsdp import FullyShardedDataParallel

from lico_lightning._safety import full_parameters
from lico_lightning.callbacks import GroundingMonitor, GroundingProbes
from lico_lightning.data import ShapesCaptionDataModule
from lico_lightning.modules import CLIPFineTuner, clip_param_groups
from lico_lightning.text import tiny_openclip_config

# a tiny CLIP with a 4x4 patch grid and 2 blocks per tower, captions of <= 16 tokens
CFG = tiny_openclip_config(context_length=16)
CFG["vision_cfg"].update(patch_size=8, layers=2)
METHODS = ["interaction_cam", "integrated_jacobians"]
METRICS = ["pga", "pge", "mpge", "cid"]
#: FSDP against the unsharded model: the same float32 maths, other reduction orders
ATOL = 1e-5


class _CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy on CPU (tests only). Lightning refuses it twice:

    1. the accelerator connector raises "The strategy `fsdp` requires a GPU accelerator" for
       ``strategy="fsdp"`` or an ``FSDPStrategy`` instance with ``accelerator="cpu"`` (it tests
       ``type(strategy) is FSDPStrategy``: a subclass passes);
    2. ``FSDPStrategy._setup_model`` wraps with ``device_id=root_device.index``, ``None`` on
       CPU, for which torch's FSDP raises "FSDP needs a non-CPU accelerator device"; here the
       same wrapping with ``device_id=cpu`` (torch's FSDP then runs on gloo).
    """

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )


def _data() -> ShapesCaptionDataModule:
    return ShapesCaptionDataModule(
        model_cfg=CFG, num_train=16, num_val=8, num_test=4, batch_size=4, seed=0
    )


def _probes(n: int = 5) -> GroundingProbes:
    dm = _data()
    dm.setup("validate")
    return GroundingProbes.from_items(
        dm.val_dataset.draw_probes(n, torch.Generator().manual_seed(1))
    )


def _monitor() -> GroundingMonitor:
    return GroundingMonitor(
        methods=METHODS,
        metrics=METRICS,
        probes=_probes(),  # 5 probes: the 2 ranks explain 3 and 2
        every_n_train_steps=2,
        explainer_kwargs={"integrated_jacobians": {"n_steps": 2}},
        perturbation_steps=3,
        log_images=False,
    )


def _module(**kw: Any) -> CLIPFineTuner:
    return CLIPFineTuner(
        model_cfg=CFG, lr=1e-2, warmup_steps=1, lr_schedule="constant", retrieval_k=(1,), **kw
    )


def _training_state(trainer: pl.Trainer) -> dict[str, Any]:
    """This rank's sharded training state: FSDP's flat shards and gradients (values and the
    tensors themselves), the original parameters' shapes / gradient tensors / requires_grad,
    every module's mode, FSDP's per-unit state, the RNG."""
    root = trainer.strategy.model
    units = FullyShardedDataParallel.fsdp_modules(root)
    flat = [u._handle.flat_param for u in units]
    params = list(root.parameters())
    return {
        "shards": [f.detach().clone() for f in flat],
        "flat_grads": [None if f.grad is None else f.grad.clone() for f in flat],
        "flat_grad_ids": [id(f.grad) for f in flat],
        "flat_requires_grad": [f.requires_grad for f in flat],
        "shapes": [tuple(p.shape) for p in params],
        "grads": [None if p.grad is None else p.grad.clone() for p in params],
        "grad_ids": [id(p.grad) for p in params],
        "requires_grad": [p.requires_grad for p in params],
        "modes": [m.training for m in root.modules()],
        "fsdp_states": [str(u.training_state) for u in units],
        "rng": torch.get_rng_state(),
    }


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    return [k for k in before if not same(before[k], after[k])]


class _Snapshot(Callback):
    """Records the training state at every ``on_train_batch_end`` (placed before and after the
    monitor in ``callbacks``: Lightning calls them in that order)."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append(_training_state(trainer))


def _fit(
    strategy: Strategy, monitored: bool, accelerator: str, devices: int, **module_kw: Any
) -> dict:
    pl.seed_everything(3)
    # class names: validation builds the zero-shot classifier from the gathered text tower
    module = _module(class_names=["circle", "square"], **module_kw)
    monitor, before, after = _monitor(), _Snapshot(), _Snapshot()
    trainer = pl.Trainer(
        max_steps=2,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        val_check_interval=2,  # after the monitor's run at step 2
        # two runs compared bitwise: deterministic kernels where they exist (CUDA), a warning
        # (not an error) for an op without one
        deterministic="warn",
        callbacks=[before, monitor, after] if monitored else [],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, _data())
    out: dict[str, Any] = {
        "weights": module.plain_state_dict(),  # gathered: a collective on every rank
        "module_kw": module_kw,
        "validated": "val/R@1" in trainer.callback_metrics,
        "group_sizes": [len(g["params"]) for g in trainer.optimizers[0].param_groups],
        "num_units": len(FullyShardedDataParallel.fsdp_modules(trainer.strategy.model)),
        "local_numel": sum(p.numel() for p in module.model.parameters()),
    }
    if module_kw:  # the whole LightningModule (e.g. LoRA adapters unmerged), gathered
        with full_parameters(trainer.strategy.model):
            out["weights"] = {k: v.clone() for k, v in module.state_dict().items()}
    if monitored:
        out["results"] = dict(monitor.last_results)
        out["num_runs"] = monitor.num_runs
        out["changed"] = [_differences(b, a) for b, a in zip(before.states, after.states)]
        out["grads_set"] = [any(g is not None for g in s["grads"]) for s in before.states]
    return out


def _fsdp_worker(rank: int, world_size: int, out_dir: str) -> dict[str, dict]:
    # an externally launched run for Lightning (as under torchrun): the gloo group is ours
    os.environ.update(
        LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world_size), NODE_RANK="0"
    )
    from open_clip.transformer import ResidualAttentionBlock

    torch.set_num_threads(1)
    runs = {
        "ddp": _fit(DDPStrategy(), False, "cpu", world_size),
        # `--trainer.strategy fsdp`: one FSDP unit around the LightningModule
        "plain": _fit(_CPUFSDPStrategy(), False, "cpu", world_size),
        "monitored": _fit(_CPUFSDPStrategy(), True, "cpu", world_size),
        # the usual large-model set-up: one unit per transformer block
        "nested": _fit(
            _CPUFSDPStrategy(auto_wrap_policy={ResidualAttentionBlock}), True, "cpu", world_size
        ),
        # LoRA: parametrized attention weights and hooked MLP adapters, frozen base
        "lora": _fit(_CPUFSDPStrategy(), True, "cpu", world_size, lora_rank=2),
    }
    for name, run in runs.items():  # the gathered weights, the same on every rank: a file
        weights = run.pop("weights")  # (too large for the result queue)
        if rank == 0:
            run["weights"] = os.path.join(out_dir, f"{name}.pt")
            torch.save(weights, run["weights"])
    return runs


def _unsharded_results(
    weights: dict[str, torch.Tensor], device: str = "cpu", **module_kw: Any
) -> dict:
    """The monitor's values on the same weights, not sharded, in one process (a plain loop):
    a plain open_clip state dict, or the module's own (with ``module_kw``)."""
    module = _module(**module_kw)
    if module_kw:
        checkpoint = {"state_dict": weights}
        module.on_load_checkpoint(checkpoint)  # the 1-element logit scale of FSDP made 0-d
        module.load_state_dict(checkpoint["state_dict"])
    else:
        module.model.load_state_dict(weights)
    monitor = _monitor()
    monitor.attach(module.model.to(device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monitor.step(2)


def _check_runs(runs: list[dict[str, dict]], device: str = "cpu") -> None:
    for run in runs[0].values():  # a file from a spawned rank, else the tensors
        if isinstance(run["weights"], str):
            run["weights"] = torch.load(run["weights"])
    plain, monitored, nested = (runs[0][k] for k in ("plain", "monitored", "nested"))
    world_size = len(runs)
    # the weights were sharded: each rank held about 1/world of them
    full = sum(v.numel() for k, v in plain["weights"].items() if k != "attn_mask")
    if world_size > 1:
        assert all(r["monitored"]["local_numel"] < full for r in runs)
    assert nested["num_units"] > monitored["num_units"] == 1
    assert all(run["validated"] for r in runs for run in r.values())
    # open_clip's AdamW groups (no decay for ndim < 2: FSDP's shards are flat) as unsharded
    want = [len(g["params"]) for g in clip_param_groups(_module().model, 0.1)]
    assert all(r[name]["group_sizes"] == want for r in runs for name in ("plain", "nested"))

    # trains as DDP does (reduce-scatter instead of all-reduce: float rounding apart)
    if "ddp" in runs[0]:
        for key, value in runs[0]["ddp"]["weights"].items():
            torch.testing.assert_close(plain["weights"][key], value, atol=1e-5, rtol=0, msg=key)

    # no perturbation: the monitored run's weights equal the plain run's, bitwise
    assert plain["weights"].keys() == monitored["weights"].keys()
    for key, value in plain["weights"].items():
        assert torch.equal(value, monitored["weights"][key]), key
    assert plain["weights"]["logit_scale"].shape == ()  # exported as open_clip builds it

    for name in ("monitored", "nested", "lora"):
        for rank, run in enumerate(r[name] for r in runs):
            assert run["num_runs"] == 1  # step 2
            if name != "lora":  # (a LoRA shard may hold no trainable parameter)
                assert run["grads_set"] == [True, True]  # Lightning zeroes them before backward
            # shards, gradients (values and tensors), flags, modes, FSDP state, RNG: untouched
            assert run["changed"] == [[], []], (name, rank)
            means = {f"grounding/{m}/{k}" for m in METHODS for k in METRICS}
            errors = {f"{k}_se" for k in means if not k.endswith("/mpge")}  # mPGE: a median
            assert set(run["results"]) == means | errors
            assert run["results"] == runs[0][name]["results"]  # reduced: equal on every rank
        # the whole model explained: the values of the unsharded model with the same weights
        want = _unsharded_results(runs[0][name]["weights"], device, **runs[0][name]["module_kw"])
        for key, value in runs[0][name]["results"].items():
            assert value == pytest.approx(want[key], abs=ATOL), (name, key)

    # the comparison can fail: the untrained weights give other values
    before = _unsharded_results(_module().plain_state_dict(), device)
    assert any(abs(before[k] - monitored["results"][k]) > 100 * ATOL for k in monitored["results"])


@pytest.mark.distributed
def test_fsdp_on_two_cpu_processes_explains_the_whole_model_unperturbed(tmp_path) -> None:
    _check_runs(run_in_gloo_group(_fsdp_worker, str(tmp_path)))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: Lightning's FSDPStrategy refuses accelerator='cpu' ('The "
    "strategy `fsdp` requires a GPU accelerator') and wraps with device_id=None on CPU, for "
    "which torch's FSDP raises 'FSDP needs a non-CPU accelerator device' (the CPU test above "
    "runs it through a subclass)",
)
def test_fsdp_on_cuda_with_lightnings_own_strategy() -> None:
    """``Trainer(strategy="fsdp")`` unchanged, on 1 GPU in this process (Lightning would
    re-launch the pytest command for a second device): one shard holds the whole model, but
    flat parameters, the forward redirection and the gather are the real CUDA code path."""
    from open_clip.transformer import ResidualAttentionBlock

    def run(**kw: Any) -> FSDPStrategy:
        return FSDPStrategy(**kw)

    try:
        runs = {
            "plain": _fit(run(), False, "cuda", 1),
            "monitored": _fit(run(), True, "cuda", 1),
            "nested": _fit(run(auto_wrap_policy={ResidualAttentionBlock}), True, "cuda", 1),
            "lora": _fit(run(), True, "cuda", 1, lora_rank=2),
        }
        _check_runs([runs], device="cuda")
    finally:
        torch.use_deterministic_algorithms(False)  # set by deterministic="warn"


# ------------------------------------------------------------------ no process needed
def _under_fsdp(module: CLIPFineTuner) -> CLIPFineTuner:
    """``setup`` as Lightning calls it under an FSDPStrategy (before wrapping the model)."""
    # what `setup` reads of the Trainer; no process group is needed before the wrapping
    module.trainer = SimpleNamespace(strategy=FSDPStrategy(), global_rank=0, world_size=1)
    module.setup("fit")
    return module


def test_fsdp_setup_makes_the_logit_scale_one_element_with_the_same_loss() -> None:
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    module = _module(loss="clip")
    tokens = module.tokenize(["a red circle", "a blue square", "a cat", "two birds"])
    before = module.contrastive_loss(images, tokens).detach()
    scale = module.model.logit_scale.detach().clone()
    _under_fsdp(module)
    assert module.model.logit_scale.shape == (1,)  # FSDP refuses 0-d parameters
    assert torch.equal(module.model.logit_scale.detach().reshape(()), scale)
    assert torch.equal(module.contrastive_loss(images, tokens).detach(), before)

    # a checkpoint written under FSDP (1-element) loads into an unsharded module (0-d) and
    # back; the loaded values are the saved ones
    plain = _module()
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}}
    plain.on_load_checkpoint(checkpoint)
    plain.load_state_dict(checkpoint["state_dict"])
    assert plain.model.logit_scale.shape == () and torch.equal(plain.model.logit_scale, scale)
    sharded = _under_fsdp(_module())
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in plain.model.state_dict().items()}}
    sharded.on_load_checkpoint(checkpoint)
    sharded.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(sharded.model.logit_scale, scale.reshape(1))


def test_fsdp_refuses_contrastive_accumulation_before_wrapping() -> None:
    with pytest.raises(ValueError, match=r"Expected accum_freq=1 under FSDP, but got accum_freq=2"):
        _under_fsdp(_module(accum_freq=2))
