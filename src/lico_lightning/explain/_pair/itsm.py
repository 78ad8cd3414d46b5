"""ITSM: image–text similarity maps from pair-wise products of projected token embeddings.

Baseline of the second-order attributions paper (§4.1, after Li et al. 2022): every image
token and every caption token is sent through its tower's final norm and projection on its
own, and the interaction of a token pair is the (scaled) product of the two projected tokens.
``variant="output"`` (ITSM_out) uses the output of the last block; ``variant="hidden"``
(ITSM_hidden) the same hidden representation integrated Jacobians attribute to (the input of
block ``image_layer`` / ``text_layer``). Caption tokens after EOT get zero.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._validation import check_bool, check_choice
from lico_lightning.explain._pair.base import register_pair_explainer
from lico_lightning.explain._pair.dual_encoder import DualEncoder, Where
from lico_lightning.explain._pair.factorized import (
    FactorizedInteractionExplainer,
    Modality,
    SideFactors,
)

__all__ = ["ITSM"]


@register_pair_explainer("itsm")
class ITSM(FactorizedInteractionExplainer):
    """Image–text similarity map (ITSM_out / ITSM_hidden) as token × token interactions.

    .. math::
        A_{st} = \\tau \\, \\langle \\hat z^a_s, \\hat z^b_t \\rangle, \\qquad
        z_s = \\mathrm{proj}(\\mathrm{LN}(x_s)), \\quad \\hat z = z / \\lVert z \\rVert
        \\ (\\text{if normalize})

    Args:
        encoder: the dual encoder; needs ``image_token_head`` / ``text_token_head`` and token
            layers.
        variant: ``"output"`` (last block's output) or ``"hidden"`` (input of the chosen
            block, as integrated Jacobians).
        image_layer: block whose input is used for ``"hidden"`` (default: the last block).
        text_layer: the same for the text tower.
        normalize: L2-normalise every projected token (cosine, as ITSM) or use raw products.

    Example:
        >>> import torch
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> itsm = ITSM(tiny_dual_encoder(), variant="hidden")
        >>> res = itsm.attribute(images=torch.randn(2, 3, 32, 32), texts=["a dog", "a car"])
        >>> res.interactions.shape
        torch.Size([2, 77, 4, 4])
    """

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        variant: Literal["output", "hidden"] = "output",
        image_layer: int = -1,
        text_layer: int = -1,
        normalize: bool = True,
    ) -> None:
        super().__init__(encoder)
        self.variant = check_choice("variant", variant, ("output", "hidden"))
        self._set_layers(image_layer, text_layer)
        self.normalize = check_bool("normalize", normalize)
        self.method = f"itsm_{variant}"

    def _side_factors(self, modality: Modality, inputs: Tensor) -> SideFactors:
        enc = self.encoder
        on: Where
        if self.variant == "output":
            layer, on = -1, "output"
        else:
            layer = self._layer_of(modality)
            on = "input"
        with enc.capture(modality, layer, on=on) as seen:
            embeddings = self._run(modality, inputs)
        tokens = seen[0]
        head = enc.image_token_head if modality == "image" else enc.text_token_head
        z = head(tokens)
        if self.normalize:
            z = F.normalize(z, dim=-1)
        if modality == "text":
            z = z * self._text_valid(inputs)[..., None].to(z.dtype)
        return SideFactors(z, embeddings, None)
