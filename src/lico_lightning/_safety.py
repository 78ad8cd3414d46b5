"""Leave a model exactly as it was found: the context managers every explainer uses.

Every explainer (saliency methods for classifiers, dual-encoder explainers) and every metric
or callback that runs a model it does not own goes through these, so the rules are written
once:

* :func:`restored_training_modes` — every module's ``training`` flag saved and restored (also
  on error), optionally eval mode inside;
* :func:`restored_requires_grad` — every parameter's ``requires_grad`` saved and restored,
  optionally all frozen inside (no autograd graph into the model);
* :func:`preserve_model_state` — both of the above (eval mode by default);
* :func:`explanation_mode` — leave ``torch.inference_mode`` (Lightning validation) with grad
  off (or on, for explainers that optimise or differentiate their own leaves);
* :func:`detach_input` — a normal (non-inference) copy of an input;
* :func:`module_device` — the device of a module's weights;
* :func:`full_parameters` — the full parameters of an FSDP-sharded model, gathered for an
  explanation and dropped afterwards (the sharded training state left as it was).

They sit at the package root so that every layer (explain, metrics, callbacks, modules) may
import them; :func:`preserve_model_state` is re-exported from :mod:`lico_lightning.explain`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "detach_input",
    "explanation_mode",
    "full_parameters",
    "module_device",
    "parked_grads",
    "preserve_model_state",
    "restored_requires_grad",
    "restored_training_modes",
]


@contextmanager
def restored_training_modes(module: nn.Module, *, eval_mode: bool = True) -> Iterator[None]:
    """Optionally switch ``module`` to eval mode; restore every submodule's ``training`` flag
    on exit, also on error (a mixed train/eval state is restored module by module).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with restored_training_modes(net):
        ...     net[1].training
        False
        >>> net[1].training
        True
    """
    modes = [(m, m.training) for m in module.modules()]
    try:
        if eval_mode:
            module.eval()
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def restored_requires_grad(module: nn.Module, *, freeze: bool = False) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` on exit, also on error; with ``freeze``,
    set it to False inside (no autograd graph is built into the model; ``.grad`` is never
    read or written).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with restored_requires_grad(net, freeze=True):
        ...     net.weight.requires_grad
        False
        >>> net.weight.requires_grad
        True
    """
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        if freeze:
            for p, _ in flags:
                p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


@contextmanager
def parked_grads(module: nn.Module) -> Iterator[None]:
    """Set every parameter's ``.grad`` aside inside and put the same tensors back on exit,
    also on error: whatever runs inside (an explainer that back-propagates into the weights)
    writes into fresh gradients that are dropped, never into the training loop's.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> net(torch.ones(1, 2)).sum().backward()
        >>> before = net.weight.grad.clone()
        >>> with parked_grads(net):
        ...     net(torch.ones(1, 2)).sum().backward()  # would double the gradient
        >>> torch.equal(net.weight.grad, before)
        True
    """
    saved = [(p, p.grad) for p in module.parameters()]
    for p, _ in saved:
        p.grad = None
    try:
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


@contextmanager
def preserve_model_state(model: nn.Module, *, eval_mode: bool = True) -> Iterator[None]:
    """Switch ``model`` to eval mode; restore every module's ``training`` flag, every
    parameter's ``requires_grad`` and its ``.grad`` (:func:`parked_grads`) on exit, also on
    error.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> net[1].eval()  # a mixed state is restored module by module
        Dropout(p=0.5, inplace=False)
        >>> with preserve_model_state(net):
        ...     net.training
        False
        >>> net.training, net[1].training
        (True, False)
    """
    with ExitStack() as stack:
        stack.enter_context(parked_grads(model))
        stack.enter_context(restored_requires_grad(model))
        stack.enter_context(restored_training_modes(model, eval_mode=eval_mode))
        yield


@contextmanager
def explanation_mode(*, grad: bool = False) -> Iterator[None]:
    """Leave ``torch.inference_mode`` (Lightning validation) and run without grad by default.

    Inside, gradient explainers switch grad on at their hooked layer
    (:class:`~lico_lightning.explain.LayerCapture`); explainers that differentiate
    their own leaves throughout (M2IB's gates) pass ``grad=True``. The previous grad /
    inference mode is restored on exit.
    """
    with torch.inference_mode(False), torch.enable_grad() if grad else torch.no_grad():
        yield


def detach_input(images: Tensor) -> Tensor:
    """A normal (non-inference) tensor holding ``images``, safe to feed to an autograd graph."""
    if images.is_inference() or images.requires_grad:
        with torch.inference_mode(False):
            return images.detach().clone()
    return images


def module_device(module: nn.Module, default: torch.device) -> torch.device:
    """Device of the first parameter (else the first buffer) of ``module``, else ``default``.

    Example:
        >>> module_device(nn.Linear(2, 2), torch.device("meta"))
        device(type='cpu')
        >>> module_device(nn.ReLU(), torch.device("meta"))
        device(type='meta')
    """
    for p in module.parameters():
        return p.device
    for buf in module.buffers():
        return buf.device
    return default


def _fsdp_modules(module: nn.Module) -> list[Any]:
    """The ``FullyShardedDataParallel`` (FSDP1) instances in ``module``'s tree (outermost first)."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed.fsdp import FullyShardedDataParallel

    return [m for m in module.modules() if isinstance(m, FullyShardedDataParallel)]


def _has_dtensor(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


@contextmanager
def full_parameters(module: nn.Module | None) -> Iterator[None]:
    """Inside: every FSDP-sharded parameter under ``module`` is whole, on every rank; outside
    (also on error): the sharded training state exactly as it was. A no-op for a module
    without FSDP (FSDP1, ``FullyShardedDataParallel``, as Lightning's ``FSDPStrategy`` wraps).

    For explaining a sharded model (its forward and gradients w.r.t. inputs or activations run
    on the *whole* parameters): the parameters are gathered with ``FullyShardedDataParallel.
    summon_full_params(module, writeback=False)`` — a collective, so **every rank must enter**,
    also one with nothing to explain — and nothing computed inside is written back to the
    shards. Inside, nested FSDP units run as their plain wrapped modules (no re-sharding after
    their forward, no gradient reduce-scatter: collectives only some ranks would reach), and
    the training loop's gradients (the sharded flat gradients and the original parameters'
    views into them) are set aside and put back as the same tensors. ``module`` is the
    outermost wrapper (Lightning: ``trainer.strategy.model``), or any module containing the
    FSDP units. FSDP2 (``fully_shard``, ``DTensor`` parameters) is refused with a TypeError.

    Args:
        module: the model or wrapper whose FSDP units are gathered (``None``: nothing to do).

    Example:
        >>> net = nn.Linear(2, 2)  # not sharded: nothing is gathered
        >>> with full_parameters(net):
        ...     tuple(net.weight.shape)
        (2, 2)
    """
    if module is None:
        yield
        return
    units = _fsdp_modules(module)
    if not units:
        if torch.distributed.is_available() and _has_dtensor(module):
            raise TypeError(
                "Expected a model sharded by FSDP1 (FullyShardedDataParallel, Lightning's "
                "FSDPStrategy) or not sharded, but got DTensor parameters (FSDP2 fully_shard / "
                "ModelParallelStrategy), which cannot be gathered for an explanation yet."
            )
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    flat = [handle.flat_param for u in units if (handle := getattr(u, "_handle", None))]
    saved = [(p, p.grad) for p in [*module.parameters(), *flat]]
    for p, _ in saved:  # FSDP keeps the flat gradient only while some view of it is set
        p.grad = None
    try:
        with ExitStack() as stack:
            stack.enter_context(
                FullyShardedDataParallel.summon_full_params(module, writeback=False)
            )
            for unit in units:  # run a nested unit as its wrapped module (no FSDP hooks)
                inner: nn.Module = unit.module  # (inside an activation-checkpoint wrapper)
                vars(unit)["forward"] = inner.__call__  # shadows the class's forward
                stack.callback(vars(unit).pop, "forward", None)
            yield
    finally:
        for p, grad in saved:  # the same tensors (sharded again: shapes match)
            p.grad = grad
