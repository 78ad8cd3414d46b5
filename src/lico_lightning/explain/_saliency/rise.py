"""RISE: randomized input sampling for explanation (Petsiuk et al., 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lico_lightning._validation import (
    check_logits,
    check_positive,
    check_probability,
    check_target_range,
)
from lico_lightning.explain._saliency.base import Explainer, register_explainer
from lico_lightning.functional import target_probability
from lico_lightning.functional.cam import draw_rise_parameters, rise_masks

__all__ = ["RISE"]


@register_explainer("rise")
class RISE(Explainer):
    r"""RISE saliency: the expected target probability under random smooth masks.

    .. math::
        S^c(p) = \frac{1}{M\,\mathbb{E}[m]} \sum_{i=1}^{M} p_c(x \odot m_i)\, m_i(p)

    Masks are binary ``grid_size x grid_size`` grids (each cell kept with probability
    ``probability``), bilinearly upsampled and randomly shifted (see
    :func:`~lico_lightning.functional.cam.rise_masks`). They are drawn from a
    ``torch.Generator`` seeded with ``seed`` at every call — never the global RNG — so the
    same call gives the same map, whatever the ``batch_size``. The ``B·M`` masked images run in
    batches of ``batch_size``.

    Args:
        model: classifier returning logits.
        num_masks: ``M`` (RISE: 4000 for ResNet-50 on ImageNet).
        grid_size: ``s`` (RISE: 7).
        probability: keep probability of a grid cell (RISE: 0.5).
        seed: seed of the mask generator.
        batch_size: masked images per forward pass.
        normalize: min-max normalise the output maps.
        progress: tqdm bar over batches.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> RISE(net, num_masks=64, grid_size=4).attribute(torch.randn(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 8, 8])
    """

    uses_layer = False

    def __init__(
        self,
        model: nn.Module,
        *,
        num_masks: int = 4000,
        grid_size: int = 7,
        probability: float = 0.5,
        seed: int = 0,
        batch_size: int = 128,
        normalize: bool = True,
        progress: bool = False,
    ) -> None:
        check_positive("num_masks", num_masks)
        check_positive("grid_size", grid_size)
        check_probability("probability", probability)
        check_positive("batch_size", batch_size)
        super().__init__(model, None, normalize=normalize, progress=progress)
        self.num_masks = num_masks
        self.grid_size = grid_size
        self.probability = probability
        self.seed = seed
        self.batch_size = batch_size

    def _attribute(self, images: Tensor, target: Tensor) -> Tensor:
        b, _, h, w = images.shape
        if self.grid_size > min(h, w):
            raise ValueError(
                f"Expected `grid_size` <= the image side {min(h, w)} (one grid cell per pixel at "
                f"most), but got grid_size={self.grid_size} for images of size {(h, w)}."
            )
        logits = check_logits(self.model(images[:1]), 1)
        check_target_range(target, logits.shape[1])

        generator = torch.Generator().manual_seed(self.seed)
        grids, shifts = draw_rise_parameters(
            self.num_masks, self.grid_size, self.probability, (h, w), generator
        )
        grids, shifts = grids.to(images.device), shifts.to(images.device)
        saliency = torch.zeros(b, h, w, device=images.device)
        total = self.num_masks * b
        starts = range(0, total, self.batch_size)
        for lo in tqdm(starts, desc="RISE", disable=not self.progress, leave=False):
            j = torch.arange(lo, min(lo + self.batch_size, total), device=images.device)
            mi, bi = j // b, j % b
            first, last = lo // b, (lo + j.numel() - 1) // b + 1
            masks = rise_masks(grids[first:last], shifts[first:last], (h, w))[mi - first]
            masked = images[bi] * masks[:, None].to(images.dtype)
            probs = target_probability(check_logits(self.model(masked), j.numel()), target[bi])
            saliency.index_add_(0, bi, probs[:, None, None] * masks)
        return saliency / (self.num_masks * self.probability)
