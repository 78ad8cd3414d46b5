"""Class-activation-map explainers: Grad-CAM, Grad-CAM++ and Score-CAM."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lico_lightning._validation import check_logits, check_positive, check_target_range
from lico_lightning.explain._saliency.base import Explainer, register_explainer
from lico_lightning.explain._saliency.hooks import LayerCapture
from lico_lightning.functional import normalize_saliency, target_probability
from lico_lightning.functional.cam import (
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    upsample_saliency,
    weighted_activation_map,
)

__all__ = ["GradCAM", "GradCAMPlusPlus", "ScoreCAM"]


class _GradientCAM(Explainer):
    """Shared forward/backward for gradient CAMs: one forward pass, one ``autograd.grad``."""

    def _activations_and_gradients(self, images: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        layer, layer_name = self._hooked_layer()
        capture = LayerCapture(layer, layer_name, self.reshape, gradient=True)
        with capture:
            logits = check_logits(self.model(images), images.shape[0])
        if capture.leaf is None:
            raise RuntimeError(f"Layer {layer_name!r} was not called during the forward pass.")
        check_target_range(target, logits.shape[1])
        score = logits.gather(1, target[:, None]).sum()
        if not score.requires_grad:
            raise ValueError(
                f"Expected the class scores to depend on layer {layer_name!r}, but got "
                "logits without a graph to it; choose a layer on the path to the output."
            )
        (grad,) = torch.autograd.grad(score, capture.leaf)
        return capture.feature_map(capture.leaf.detach()), capture.feature_map(grad)

    def _weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        raise NotImplementedError

    def _attribute(self, images: Tensor, target: Tensor) -> Tensor:
        activations, gradients = self._activations_and_gradients(images, target)
        cam = weighted_activation_map(activations, self._weights(activations, gradients))
        return upsample_saliency(cam, (images.shape[-2], images.shape[-1]))


@register_explainer("gradcam")
class GradCAM(_GradientCAM):
    r"""Grad-CAM (Selvaraju et al., 2017).

    .. math::
        L^c = \operatorname{ReLU}\Big(\sum_n \alpha^c_n A^n\Big), \qquad
        \alpha^c_n = \frac{1}{hw}\sum_{i,j} \frac{\partial y^c}{\partial A^n_{ij}}

    with :math:`y^c` the target logit and :math:`A` the layer output, bilinearly upsampled to
    the input size. See :class:`~lico_lightning.explain.Explainer` for the arguments.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=3)
        >>> GradCAM(net, "layer4").attribute(torch.randn(2, 3, 32, 32), torch.tensor([0, 2])).shape
        torch.Size([2, 32, 32])
    """

    def _weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return grad_cam_weights(gradients)


@register_explainer("gradcampp")
class GradCAMPlusPlus(_GradientCAM):
    r"""Grad-CAM++ (Chattopadhyay et al., 2018), closed form with the exponential class score.

    .. math::
        w^c_n = \sum_{i,j} \frac{g_{ij}^2}{2 g_{ij}^2 + \sum_{a,b} A^n_{ab} g_{ij}^3}
        \operatorname{ReLU}(g_{ij}), \qquad L^c = \operatorname{ReLU}\Big(\sum_n w^c_n A^n\Big)

    with :math:`g = \partial y^c / \partial A^n` of the target logit. See
    :class:`~lico_lightning.explain.Explainer` for the arguments.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=3)
        >>> GradCAMPlusPlus(net, "layer4").attribute(torch.randn(1, 3, 32, 32), torch.tensor([1])).shape
        torch.Size([1, 32, 32])
    """

    def _weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return grad_cam_plus_plus_weights(activations, gradients)


@register_explainer("scorecam")
class ScoreCAM(Explainer):
    r"""Score-CAM (Wang et al., 2020): weights from the model's confidence on masked inputs.

    Each feature map :math:`A^n` is upsampled to the input size and min-max normalised to a
    mask :math:`H^n`; its weight is the softmax probability of the target on the masked
    image (as in the authors' code; constant maps get weight 0 and are not evaluated):

    .. math::
        w^c_n = p_c(x \odot H^n), \qquad L^c = \operatorname{ReLU}\Big(\sum_n w^c_n A^n\Big)

    The ``B·N`` masked images run in batches of ``batch_size``.

    Args:
        model: classifier returning logits.
        layer: target layer (module or dotted name), see :class:`~lico_lightning.explain.Explainer`.
        batch_size: masked images per forward pass.
        reshape: token → feature-map reshape for transformers.
        normalize: min-max normalise the output maps.
        progress: tqdm bar over batches.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=3)
        >>> ScoreCAM(net, "layer4", batch_size=256).attribute(torch.randn(1, 3, 32, 32), torch.tensor([1])).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str | None = None,
        *,
        batch_size: int = 64,
        reshape: Callable[[Tensor], Tensor] | None = None,
        normalize: bool = True,
        progress: bool = False,
    ) -> None:
        check_positive("batch_size", batch_size)
        super().__init__(model, layer, reshape=reshape, normalize=normalize, progress=progress)
        self.batch_size = batch_size

    def _attribute(self, images: Tensor, target: Tensor) -> Tensor:
        layer, layer_name = self._hooked_layer()
        with LayerCapture(layer, layer_name, self.reshape) as capture:
            logits = check_logits(self.model(images), images.shape[0])
        if capture.output is None:
            raise RuntimeError(f"Layer {layer_name!r} was not called during the forward pass.")
        check_target_range(target, logits.shape[1])
        activations = capture.feature_map(capture.output).float()
        b, n = activations.shape[:2]
        size = (images.shape[-2], images.shape[-1])

        flat = activations.flatten(2)
        active = flat.amax(2) > flat.amin(2)
        pairs = active.nonzero()
        weights = activations.new_zeros(b, n)
        starts = range(0, pairs.shape[0], self.batch_size)
        for lo in tqdm(starts, desc="Score-CAM", disable=not self.progress, leave=False):
            bi, ni = pairs[lo : lo + self.batch_size].unbind(1)
            masks = normalize_saliency(upsample_saliency(activations[bi, ni], size))
            masked = images[bi] * masks[:, None].to(images.dtype)
            logits = check_logits(self.model(masked), masked.shape[0])
            weights[bi, ni] = target_probability(logits, target[bi])
        return upsample_saliency(weighted_activation_map(activations, weights), size)
