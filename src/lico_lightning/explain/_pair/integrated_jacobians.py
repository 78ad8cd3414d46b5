"""Integrated Jacobians (second-order attributions for dual encoders) and Interaction-CAM.

Möller et al., "Explaining caption-image interactions in CLIP models with second-order
attributions", §3 and Appendices D and F. For a pair ``(a, b)`` the method attributes

.. math::
    s(a, b) - s(r_a, b) - s(a, r_b) + s(r_a, r_b)
    = \\sum_{i,j} (a - r_a)_i \\, J^a_{ik} J^b_{kj} \\, (b - r_b)_j \\quad (\\text{eq. } 10)

to pairs of features, where the integrated Jacobians
:math:`J_{ki} = \\tfrac1N \\sum_n \\partial g_k(r + \\alpha_n(a - r)) / \\partial x_i`,
:math:`\\alpha_n = n/N`, are taken at a hidden layer of each tower (default: the
second-to-last hidden representation, i.e. the input of the last block). Summing the hidden
dimensions gives a token × token matrix; see :mod:`lico_lightning.functional.interaction`.

How it is computed here (and why it is cheap): per input only the per-token gated Jacobian
``U`` ``(T, K)`` is needed. Column ``t`` of ``U`` is one Jacobian–vector product with the
tangent ``(x - r)`` restricted to token ``t``; all tokens and interpolation steps go through
``torch.func.vmap`` over ``torch.func.jvp`` in chunks. The interaction matrix is then one
GEMM. No ``(S·D) × (P·D)`` matrix, no loop over embedding dimensions, no parameter gradients
(forward mode under ``no_grad``), and all B × B pairs of a batch cost 2B factor sets. Where the
encoder supports it, causal text towers run on the tokens up to the last EOT only
(:meth:`DualEncoder.allow_shorter_text`) and the image tower's last block on the class token
only (:meth:`DualEncoder.pooled_rows_only`); both leave the result unchanged.

The score is the model's: ``logit_scale · cos + bias``; with cosine similarity the towers are
differentiated *including* the L2 normalisation, so eq. 2 = eq. 10 holds for the actual score
(the bias cancels in eq. 2). (exCLIP instead divides dot-product attributions by
``‖e_img‖‖e_txt‖``, which only approximates the cosine.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from lico_lightning._validation import check_choice, check_int
from lico_lightning.explain._pair.base import register_pair_explainer
from lico_lightning.explain._pair.dual_encoder import DualEncoder
from lico_lightning.explain._pair.factorized import (
    FactorizedInteractionExplainer,
    Modality,
    SideFactors,
)
from lico_lightning.functional.interaction import integration_points

__all__ = ["IntegratedJacobians", "InteractionCAM"]

ImageReference = Literal["zeros", "black", "hidden_zeros"]
TextReference = Literal["pad", "hidden_zeros"]


@contextmanager
def _forward_ad_friendly() -> Iterator[None]:
    """Route attention through kernels with forward-mode derivatives (restored on exit).

    The fused CPU/GPU attention kernels and ``nn.MultiheadAttention``'s inference fast path
    have no forward-mode AD formula; the math SDPA backend has.
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@register_pair_explainer("integrated_jacobians")
class IntegratedJacobians(FactorizedInteractionExplainer):
    """Second-order attributions of a dual encoder's score onto token × patch interactions.

    Args:
        encoder: the dual encoder (e.g. ``OpenCLIPDualEncoder(model)``, or the open_clip model
            itself); its towers need token layers (``image_layers`` / ``text_layers``).
        n_steps: N, interpolation steps of the Riemann sum (paper: 50).
        image_layer: block of the image tower whose *input* is interpolated (negative counts
            from the end; ``-1`` = the second-to-last hidden representation, the paper's
            default).
        text_layer: the same for the text tower.
        image_reference: ``"zeros"`` (a zero image in normalised input space, default),
            ``"black"`` (a black image) or ``"hidden_zeros"`` (zeros at the hidden layer).
        text_reference: ``"pad"`` (``[SOT, pad, …, pad, EOT]`` with EOT where the caption's EOT
            is, default) or ``"hidden_zeros"``.
        internal_batch_size: how many (interpolation step, token) Jacobian–vector products
            run in one vectorised call; lower it to save memory.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> ij = IntegratedJacobians(enc, n_steps=8)
        >>> res = ij.attribute(images=torch.randn(2, 3, 32, 32), texts=["a dog", "a red car"])
        >>> res.interactions.shape  # (B, S, Hp, Wp)
        torch.Size([2, 77, 4, 4])
        >>> res.project_span((1, 3)).shape  # "a dog" onto the image
        torch.Size([2, 4, 4])
        >>> bool(res.completeness_residual().abs().max() < 0.2 * res.score.abs().max())
        True
    """

    method = "integrated_jacobians"

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        n_steps: int = 50,
        image_layer: int = -1,
        text_layer: int = -1,
        image_reference: ImageReference = "zeros",
        text_reference: TextReference = "pad",
        internal_batch_size: int = 64,
    ) -> None:
        super().__init__(encoder)
        check_int("n_steps", n_steps, 1)
        check_int("internal_batch_size", internal_batch_size, 1)
        self._set_layers(image_layer, text_layer)
        self.n_steps = n_steps
        self.image_reference = check_choice(
            "image_reference", image_reference, ("zeros", "black", "hidden_zeros")
        )
        self.text_reference = check_choice(
            "text_reference", text_reference, ("pad", "hidden_zeros")
        )
        self.internal_batch_size = internal_batch_size

    def _reference_inputs(self, modality: Modality, inputs: Tensor) -> Tensor | None:
        if modality == "image":
            if self.image_reference == "zeros":
                return torch.zeros_like(inputs)
            if self.image_reference == "black":
                return self.encoder.black_image(inputs)
            return None
        if self.text_reference == "hidden_zeros":
            return None
        spec = self.encoder.text_spec
        ref = torch.full_like(inputs, spec.pad_id)
        ref[:, 0] = spec.sot_id
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        ref[rows, self.encoder.eot_positions(inputs)] = spec.eot_id
        return ref

    def _side_factors(self, modality: Modality, inputs: Tensor) -> SideFactors:
        enc = self.encoder
        layer = self._layer_of(modality)
        b = inputs.shape[0]

        # hidden states of inputs and references at the input of `layer`
        ref_inputs = self._reference_inputs(modality, inputs)
        with enc.capture(modality, layer) as seen:
            self._run(modality, inputs if ref_inputs is None else torch.cat([inputs, ref_inputs]))
        hidden = seen[0]
        x = hidden[:b]
        r = torch.zeros_like(x) if ref_inputs is None else hidden[b:]
        delta = x - r

        def embed(h: Tensor, source: Tensor) -> Tensor:
            """Normalised embedding of ``source`` inputs with the block input replaced by ``h``."""
            with enc.intervene(modality, layer, lambda _: h):
                return self._unit(self._run(modality, source))

        # both ends of the path: the model's embeddings of inputs and references
        ends = embed(torch.cat([x, r]), torch.cat([inputs, inputs]))
        e_x, e_r = ends[:b], ends[b:]

        # tokens whose gated Jacobian can be non-zero
        moving = delta.flatten(2).abs().amax(-1) > 0  # (B, T)
        if modality == "text" and enc.text_spec.causal:
            moving &= self._text_valid(inputs)  # later tokens cannot reach the EOT embedding
        active = moving.any(0).nonzero().flatten()  # (A,)
        t = x.shape[1]
        k = e_x.shape[-1]
        factors = torch.zeros(b, t, k, dtype=x.dtype, device=x.device)
        if active.numel() == 0:
            return SideFactors(factors, e_x, e_r)

        n = self.n_steps
        alphas = integration_points(n, dtype=x.dtype).to(x.device)
        onehot = (torch.arange(t, device=x.device)[None] == active[:, None]).to(x.dtype)  # (A, T)
        chunk = max(1, self.internal_batch_size // active.numel())
        acc = torch.zeros(b, active.numel(), k, dtype=x.dtype, device=x.device)
        with ExitStack() as stack:
            stack.enter_context(_forward_ad_friendly())
            stack.enter_context(enc.pooled_rows_only(modality))
            if modality == "text" and enc.text_spec.causal:
                # tokens after the last EOT can neither move nor reach an EOT: drop them
                if stack.enter_context(enc.allow_shorter_text(layer)):
                    keep = int(active.max()) + 1
                    keep = max(keep, int(enc.eot_positions(inputs).max()) + 1)
                    r, delta, onehot = r[:, :keep], delta[:, :keep], onehot[:, :keep]
            for start in range(0, b * n, chunk):
                rows = torch.arange(start, min(start + chunk, b * n), device=x.device)
                src, step = rows // n, rows % n
                source = inputs[src]
                h = r[src] + alphas[step, None, None] * delta[src]
                tangents = onehot[:, None, :, None] * delta[src][None]  # (A, R, T, D)

                def jvp_column(v: Tensor, h: Tensor = h, source: Tensor = source) -> Tensor:
                    return jvp(lambda z: embed(z, source), (h,), (v,))[1]

                cols = vmap(jvp_column)(tangents)  # (A, R, K)
                acc.index_add_(0, src, cols.transpose(0, 1))
        factors[:, active] = acc / n
        return SideFactors(factors, e_x, e_r)


@register_pair_explainer("interaction_cam")
class InteractionCAM(IntegratedJacobians):
    """Interaction-CAM (Sammani et al. 2023): integrated Jacobians with N = 1 and zero references.

    Appendix D of the second-order attributions paper: "Jacobians × inputs",
    :math:`A_{ij} = x_i \\, \\partial g_k / \\partial x_i \\; \\partial h_k / \\partial y_j \\, y_j`
    with the hidden representations ``x``, ``y`` at the chosen layers.

    Args:
        encoder: the dual encoder.
        image_layer: block of the image tower whose input is attributed (default: last).
        text_layer: the same for the text tower.
        internal_batch_size: see :class:`IntegratedJacobians`.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> cam = InteractionCAM(tiny_dual_encoder())
        >>> cam.attribute(images=torch.randn(1, 3, 32, 32), texts=["a dog"]).interactions.shape
        torch.Size([1, 77, 4, 4])
    """

    method = "interaction_cam"

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        image_layer: int = -1,
        text_layer: int = -1,
        internal_batch_size: int = 64,
    ) -> None:
        super().__init__(
            encoder,
            n_steps=1,
            image_layer=image_layer,
            text_layer=text_layer,
            image_reference="hidden_zeros",
            text_reference="hidden_zeros",
            internal_batch_size=internal_batch_size,
        )
