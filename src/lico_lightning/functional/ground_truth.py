r"""Ground-truth measures: explanations and models checked against scenes whose evidence is
known by construction (``data.ShortcutDataModule``: target, cue and distractor regions, and
re-renders without each object).

**Evidence share and shortcut share are not new formulas.** CLEVR-XAI's relevance mass accuracy
(Arras et al. 2022), the share of the positive relevance inside the ground-truth mask, is the
energy pointing game :func:`~lico_lightning.functional.energy_pointing_game` (one formula, one
name): the *evidence share* is ``energy_pointing_game(saliency, gt["target_mask"])`` and the
*shortcut share* ``energy_pointing_game(saliency, gt["cue_mask"])`` (or the ``*_box`` regions).
CLEVR-XAI also uses the positive part of the relevance only.

The other measures, each one function here and one class in :mod:`lico_lightning.metrics`:

* :func:`relevance_rank_accuracy` (CLEVR-XAI): the share of the ``K`` highest-ranked cells
  that lie in the mask, ``K`` = the mask's size;
* :func:`intervention_correctness` (FunnyBirds' single-deletion protocol, Hesse et al. 2023):
  per image, Spearman's correlation between each object's true effect and its attributed mass;
* :func:`intervention_effect`: the drop of a class logit when the scene is re-rendered without
  an object — *target reliance* (without the target) and *cue reliance* (without the cue) of a
  model, no explainer needed;
* :func:`group_accuracy`: accuracy per group (label x cue agrees) and the worst group's.

References:
    Arras, Osman, Samek. CLEVR-XAI: A benchmark dataset for the ground truth evaluation of
    neural network explanations. Information Fusion 81 (2022).
    Hesse, Schaub-Meyer, Roth. FunnyBirds: A Synthetic Vision Dataset for a Part-Based Analysis
    of Explainable AI Methods. ICCV 2023.
    Sagawa et al. Distributionally Robust Neural Networks for Group Shifts. ICLR 2020
    (worst-group accuracy).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lico_lightning._validation import (
    check_choice,
    check_finite,
    check_int,
    check_int_pair,
    check_tensor,
)
from lico_lightning.functional.pointing import box_to_mask
from lico_lightning.functional.rank import spearman_correlation

__all__ = [
    "group_accuracy",
    "intervention_correctness",
    "intervention_effect",
    "relevance_rank_accuracy",
]


def relevance_rank_accuracy(
    saliency: Tensor,
    region: Tensor,
    *,
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    r"""Relevance rank accuracy (CLEVR-XAI): the share of the map's ``K`` highest cells that lie
    in the ground-truth region, ``K = |M|`` the region's size in cells.

    .. math::
        \text{RRA}_b = \frac{|\{p : s_{b,p} \text{ among the } K_b \text{ largest}\} \cap M_b|}
                            {K_b}, \qquad K_b = |M_b|

    Cells tied with the ``K``-th largest value are shared out evenly (the expectation over
    random tie-breaking): with :math:`t` the ``K``-th largest value,
    :math:`\text{hits} = |\{s > t\} \cap M| + (K - |\{s > t\}|)\,
    |\{s = t\} \cap M| / |\{s = t\}|`. A constant map thus scores the chance level
    :math:`|M| / hw`, whatever the order of its cells. The raw values are ranked (no positive
    part): only the order matters.

    Args:
        saliency: ``(B, h, w)`` finite maps.
        region: ``(B, h, w)`` bool masks on the map's grid, or ``(B, 4)`` boxes
            ``(x1, y1, x2, y2)`` in pixels of ``image_size`` (a cell is in a box when its
            centre is, as in :func:`~lico_lightning.functional.box_to_mask`).
        image_size: ``(H, W)`` the boxes refer to (default: the map's own size).
        reduction: ``"mean"`` over the maps whose region is not empty (ValueError if none),
            or ``"none"`` → ``(B,)`` with NaN for an empty region.

    Returns:
        A scalar in ``[0, 1]``, or ``(B,)``.

    Example:
        >>> sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> mask = torch.tensor([[[True, False], [True, False]]])  # K = 2: cells 4 and 2
        >>> relevance_rank_accuracy(sal, mask)  # top-2 = {4, 3}: one of two in the mask
        tensor(0.5000)
        >>> relevance_rank_accuracy(torch.ones(1, 2, 2), mask)  # ties: chance level |M|/hw
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    check_tensor("saliency", saliency, ndim=3, floating=True)
    check_finite("saliency", saliency)
    mask = _region_mask(
        "region", region, saliency.shape, image_size, "the target's ground_truth['target_mask']"
    ).to(saliency.device)
    b = saliency.shape[0]
    s = saliency.flatten(1).to(torch.promote_types(saliency.dtype, torch.float32))
    m = mask.flatten(1)
    k = m.sum(1)
    t = s.sort(1, descending=True).values.gather(1, (k - 1).clamp_min(0)[:, None])
    above, tied = s > t, s == t
    hits = (above & m).sum(1) + (k - above.sum(1)) * (tied & m).sum(1) / tied.sum(1)
    values = torch.where(k > 0, hits.to(s.dtype) / k.clamp_min(1), float("nan"))
    return _reduce(values.reshape(b), reduction, "relevance_rank_accuracy")


def intervention_correctness(
    saliency: Tensor,
    regions: Tensor,
    effects: Tensor,
    *,
    mass: Literal["mean", "sum"] = "mean",
    image_size: tuple[int, int] | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    r"""Single-deletion intervention correctness (FunnyBirds, Hesse et al. 2023): per image,
    Spearman's rank correlation between the true effect of each object — the drop of the
    explained logit when the scene is re-rendered without it
    (:func:`intervention_effect`) — and the attribution mass on it.

    .. math::
        \rho_b = \operatorname{Spearman}\big((e_{b,o})_o,\; (a_{b,o})_o\big), \qquad
        a_{b,o} = \frac{1}{|R_{b,o}|} \sum_{p \in R_{b,o}} s_{b,p}
        \quad (\texttt{mass="mean"})

    ``mass="sum"`` drops the :math:`1/|R|`: FunnyBirds' part importance, the plain (signed)
    sum of the map over the part. Its parts are of similar size; here they are not (the target
    is larger than the distractors and the cue), and with sums object size stands in for
    importance: a *random* map scores 0.77 for a model that reads the target (measured on
    the oracle test, 96 scenes), so the default is the mean attribution per cell. As in
    FunnyBirds, an image whose effects or masses are all equal has no correlation: it scores
    NaN and the mean leaves it out. FunnyBirds reports :math:`(\rho + 1)/2`; this returns
    :math:`\rho`.
    The measure rates the *explainer* against the model's own behaviour: a faithful map of a
    model that reads a shortcut scores high too.

    Args:
        saliency: ``(B, h, w)`` finite maps of the explained class.
        regions: ``(B, O, h, w)`` bool masks of ``O >= 2`` objects on the map's grid, or
            ``(B, O, 4)`` boxes in pixels of ``image_size``.
        effects: ``(B, O)`` finite true effects of removing each object.
        mass: ``"mean"`` (attribution per cell of the object; an object covering no cell has
            mass 0) or ``"sum"`` (FunnyBirds).
        image_size: ``(H, W)`` the boxes refer to (default: the map's own size).
        reduction: ``"mean"`` over the images with a defined correlation (ValueError if none),
            or ``"none"`` → ``(B,)`` with NaN where undefined.

    Returns:
        A scalar in ``[-1, 1]``, or ``(B,)``.

    Example:
        >>> sal = torch.zeros(1, 4, 4); sal[0, 0, 0] = 3.0; sal[0, 3, 3] = 1.0
        >>> boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0], [0.0, 2.0, 2.0, 4.0]]])
        >>> intervention_correctness(sal, boxes, torch.tensor([[2.0, 1.0, 0.0]]))  # masses 3/4, 1/4, 0
        tensor(1.)
        >>> intervention_correctness(sal, boxes, torch.tensor([[0.0, 1.0, 2.0]]))
        tensor(-1.)
    """
    check_choice("reduction", reduction, ("mean", "none"))
    check_choice("mass", mass, ("mean", "sum"))
    check_tensor("saliency", saliency, ndim=3, floating=True)
    check_finite("saliency", saliency)
    b, h, w = saliency.shape
    if not isinstance(effects, Tensor):
        raise TypeError(
            "Expected `effects` to be a torch.Tensor (B, O) of logit drops — "
            "intervention_effect(logits, logits of dataset.counterfactuals, classes) — but got "
            f"{type(effects).__name__}."
        )
    check_tensor("effects", effects, ndim=2, floating=True)
    check_finite("effects", effects)
    if effects.shape[0] != b or effects.shape[1] < 2:
        raise ValueError(
            f"Expected `effects` of shape (B, O) = ({b}, O) with O >= 2 objects, but got "
            f"{tuple(effects.shape)}."
        )
    o = effects.shape[1]
    hint = "every object's ground_truth['object_masks'] or ['object_boxes']"
    _check_is_tensor("regions", regions, hint)
    check_tensor("regions", regions, ndim=(3, 4))
    if regions.shape[:2] != (b, o):
        raise ValueError(
            f"Expected `regions` of shape ({b}, {o}, h, w) masks or ({b}, {o}, 4) boxes (one "
            f"per effect), but got {tuple(regions.shape)}."
        )
    flat = regions.flatten(0, 1)
    masks = _region_mask("regions", flat, (b * o, h, w), image_size, hint).view(b, o, h, w)
    dtype = torch.promote_types(saliency.dtype, torch.float32)
    cells = masks.to(saliency.device, dtype)
    masses = (saliency.to(dtype)[:, None] * cells).sum((-2, -1))
    if mass == "mean":
        masses = masses / cells.sum((-2, -1)).clamp_min(1)
    effects = effects.to(saliency.device, dtype)
    rho = spearman_correlation(effects, masses, constant="zero")
    defined = _varies(effects) & _varies(masses)
    return _reduce(torch.where(defined, rho, float("nan")), reduction, "intervention_correctness")


def intervention_effect(
    logits: Tensor,
    counterfactual_logits: Tensor,
    target: Tensor,
    *,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    r"""The drop of the ``target`` logit when the scene is re-rendered without an object:
    *target reliance* (without the target object) and *cue reliance* (without the spurious
    cue) of a classifier, read from its logits alone (no explainer).

    .. math::
        \Delta_{b(,o)} = z_{b, y_b}(x_b) - z_{b, y_b}(x_b^{\setminus o})

    Positive: the object supported the class; about 0: the model ignores it.

    Args:
        logits: ``(B, C)`` logits of the scenes.
        counterfactual_logits: ``(B, C)`` logits of the scenes without one object, or
            ``(B, O, C)`` without each of ``O`` objects.
        target: ``(B,)`` long classes whose logit is read (the label, or the explained class).
        reduction: ``"mean"`` over the batch (``()`` or ``(O,)``), or ``"none"``
            (``(B,)`` or ``(B, O)``).

    Returns:
        The drops, in the logits' dtype.

    Example:
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
        >>> without_cue = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> intervention_effect(logits, without_cue, torch.tensor([0, 1]), reduction="none")
        tensor([2., 0.])
    """
    check_choice("reduction", reduction, ("mean", "none"))
    check_tensor("logits", logits, ndim=2, floating=True)
    check_tensor("counterfactual_logits", counterfactual_logits, ndim=(2, 3), floating=True)
    b, c = logits.shape
    cf = counterfactual_logits
    if cf.shape[0] != b or cf.shape[-1] != c:
        raise ValueError(
            f"Expected `counterfactual_logits` of shape ({b}, {c}) or ({b}, O, {c}) like "
            f"`logits`, but got {tuple(cf.shape)}."
        )
    target = _check_classes(target, b, c)
    check_finite("logits", logits)
    check_finite("counterfactual_logits", cf)
    original = logits.gather(1, target[:, None])  # (B, 1)
    if cf.ndim == 3:
        index = target.to(cf.device)[:, None, None].expand(b, cf.shape[1], 1)
        drop = original.to(cf.device) - cf.gather(2, index).squeeze(2)
    else:
        drop = (original.to(cf.device) - cf.gather(1, target.to(cf.device)[:, None])).squeeze(1)
    return drop if reduction == "none" else drop.mean(0)


def group_accuracy(
    preds: Tensor,
    target: Tensor,
    group: Tensor,
    num_groups: int,
    *,
    reduction: Literal["worst", "mean", "none"] = "worst",
) -> Tensor:
    r"""Accuracy within each group (e.g. label x cue agrees) and the worst group's accuracy,
    the robustness measure of Sagawa et al. (2020).

    .. math::
        \text{acc}_g = \frac{\sum_b [\hat y_b = y_b]\,[g_b = g]}{\sum_b [g_b = g]}, \qquad
        \text{worst} = \min_{g : n_g > 0} \text{acc}_g

    Args:
        preds: ``(B,)`` long predicted classes, or ``(B, C)`` logits / probabilities (argmax).
        target: ``(B,)`` long labels.
        group: ``(B,)`` long group of each sample in ``[0, num_groups)``.
        num_groups: number of groups ``G``.
        reduction: ``"worst"`` (min over the non-empty groups), ``"mean"`` (their unweighted
            mean) — both raise ValueError when every group is empty — or ``"none"`` →
            ``(G,)`` with NaN for an empty group.

    Returns:
        A scalar, or ``(G,)`` (float32).

    Example:
        >>> preds = torch.tensor([0, 1, 1, 1])
        >>> target = torch.tensor([0, 1, 0, 1])
        >>> group = torch.tensor([0, 1, 0, 1])
        >>> group_accuracy(preds, target, group, 3, reduction="none")
        tensor([0.5000, 1.0000,    nan])
        >>> group_accuracy(preds, target, group, 3)
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("worst", "mean", "none"))
    correct, count = group_counts(preds, target, group, num_groups)
    return reduce_group_accuracy(correct, count, reduction)


def group_counts(
    preds: Tensor, target: Tensor, group: Tensor, num_groups: int
) -> tuple[Tensor, Tensor]:
    """``(G,)`` correct predictions and ``(G,)`` samples per group (long): the sum states of
    :func:`group_accuracy`.

    Example:
        >>> group_counts(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([1, 1]), 2)
        (tensor([0, 1]), tensor([0, 2]))
    """
    check_int("num_groups", num_groups, 1)
    check_tensor("preds", preds, ndim=(1, 2))
    b = preds.shape[0]
    if preds.ndim == 2:
        check_tensor("preds", preds, floating=True)
        preds = preds.argmax(1)
    elif preds.dtype != torch.long:
        raise TypeError(
            f"Expected `preds` of dtype torch.long (or (B, C) scores), but got {preds.dtype}."
        )
    target = _check_classes(target, b, None)
    group = check_tensor("group", group, ndim=1)
    if group.dtype != torch.long or group.shape[0] != b:
        raise ValueError(
            f"Expected `group` to be a ({b},) torch.long tensor, but got {group.dtype} "
            f"{tuple(group.shape)}."
        )
    if bool(((group < 0) | (group >= num_groups)).any()):
        raise ValueError(
            f"Expected `group` in [0, {num_groups}), but got values "
            f"{sorted(set(group[(group < 0) | (group >= num_groups)].tolist()))}."
        )
    hit = (preds.to(target.device) == target).long()
    group = group.to(target.device)
    correct = torch.zeros(num_groups, dtype=torch.long, device=target.device)
    count = torch.zeros(num_groups, dtype=torch.long, device=target.device)
    return correct.index_add_(0, group, hit), count.index_add_(0, group, torch.ones_like(hit))


def reduce_group_accuracy(
    correct: Tensor, count: Tensor, reduction: Literal["worst", "mean", "none"] = "worst"
) -> Tensor:
    """Per-group accuracies from the counts of :func:`group_counts` (NaN for an empty group),
    their minimum (``"worst"``) or mean (``"mean"``) over the non-empty groups.

    Example:
        >>> reduce_group_accuracy(torch.tensor([1, 2]), torch.tensor([2, 2]))
        tensor(0.5000)
    """
    check_choice("reduction", reduction, ("worst", "mean", "none"))
    acc = torch.where(count > 0, correct / count.clamp_min(1), float("nan")).float()
    if reduction == "none":
        return acc
    kept = acc[count > 0]
    if kept.numel() == 0:
        raise ValueError("Expected at least one sample in some group, but got none.")
    return kept.min() if reduction == "worst" else kept.mean()


# --------------------------------------------------------------------------- helpers
def _varies(x: Tensor) -> Tensor:
    return x.amax(-1) > x.amin(-1)


def _check_classes(target: Tensor, b: int, c: int | None) -> Tensor:
    target = check_tensor("target", target, ndim=1)
    if target.dtype != torch.long or target.shape[0] != b:
        raise ValueError(
            f"Expected `target` to be a ({b},) torch.long tensor, but got {target.dtype} "
            f"{tuple(target.shape)}."
        )
    if c is not None and bool(((target < 0) | (target >= c)).any()):
        raise ValueError(f"Expected `target` in [0, {c}), but got {target.tolist()}.")
    return target


def _check_is_tensor(name: str, region: object, hint: str) -> None:
    if not isinstance(region, Tensor):
        raise TypeError(
            f"Expected `{name}` to be a torch.Tensor of masks or boxes ({hint} of a "
            f"ShortcutDataModule item), but got {type(region).__name__}."
        )


def _region_mask(
    name: str,
    region: Tensor,
    shape: tuple[int, ...] | torch.Size,
    image_size: tuple[int, int] | None,
    hint: str,
) -> Tensor:
    """``(N, h, w)`` bool cells of each of the ``N`` regions (masks, or boxes → cell centres)."""
    n, h, w = shape
    _check_is_tensor(name, region, hint)
    if region.ndim == 3:
        if region.dtype != torch.bool or tuple(region.shape) != (n, h, w):
            raise ValueError(
                f"Expected a mask `{name}` of dtype bool and shape ({n}, {h}, {w}) like the maps, "
                f"but got {region.dtype} {tuple(region.shape)}."
            )
        return region
    if region.ndim == 2 and tuple(region.shape) == (n, 4):
        size = check_int_pair("image_size", image_size if image_size is not None else (h, w))
        return box_to_mask(region, (h, w), size)
    raise ValueError(
        f"Expected `{name}` as ({n}, {h}, {w}) bool masks or ({n}, 4) boxes, but got "
        f"{tuple(region.shape)}."
    )


def _reduce(values: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "none":
        return values
    kept = values[~values.isnan()]
    if kept.numel() == 0:
        raise ValueError(
            f"Expected at least one image with a defined {name}, but got none; use "
            "reduction='none' to score images one by one."
        )
    return kept.mean()
