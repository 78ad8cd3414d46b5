"""M2IB: multi-modal information bottleneck attribution for dual encoders (Wang et al., 2023).

A Gaussian bottleneck is inserted, by a forward hook, after one block of ONE tower (image or
text). Its per-element gates are optimised so that the bottlenecked embedding keeps its cosine
similarity to the OTHER modality's embedding while letting as little information through as
possible; the information that does pass, per token, is the attribution.

Relation to the reference implementation (YingWANGG/M2IB):

* the other modality's embedding is a constant, computed once under ``no_grad`` (the
  reference re-encodes both towers for every copy at every step);
* the model is never mutated (hook instead of replacing the layer), its parameters are frozen
  while explaining and restored after (the reference accumulates ``.grad`` into every
  parameter), its train/eval mode is restored, the noise comes from a seeded
  ``torch.Generator`` and the device follows the model (the reference hard-codes ``cuda:0``);
* :math:`\\sigma^2` enters the bottleneck as in paper eq. 5 (the reference's latest version
  stores it but never uses it) and the KL is taken to the paper's prior
  :math:`\\mathcal{N}(0, I)` (eq. 8; the reference's first version measured it in units of
  :math:`\\sigma`, i.e. to :math:`\\mathcal{N}(0, \\sigma^2 I)` — the same at the default
  :math:`\\sigma^2 = 1`), evaluated so that it stays finite for any gate;
* kept from the reference: gates per token AND channel, :math:`\\alpha_0 = 5`, Adam with lr 1,
  the KL averaged (not summed) over the bottlenecked elements, which is what its default
  :math:`\\beta = 0.1` was tuned for;
* several pairs are optimised jointly in one batched forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._safety import explanation_mode, module_device, restored_requires_grad
from lico_lightning._validation import (
    check_choice,
    check_int,
    check_real,
    check_tensor,
)
from lico_lightning.explain._pair.base import (
    PairAttribution,
    PairExplainer,
    register_pair_explainer,
)
from lico_lightning.explain._pair.dual_encoder import DualEncoder
from lico_lightning.functional.m2ib import (
    bottleneck_capacity,
    gaussian_bottleneck,
    m2ib_objective,
)

__all__ = ["M2IB", "M2IBAttribution", "M2IBSettings"]

Tower = Literal["image", "text"]
_TOWERS = ("image", "text")


@dataclass(frozen=True)
class M2IBSettings:
    """Hyperparameters of one M2IB run (see :class:`M2IB` for their meaning)."""

    tower: Tower
    layer: int
    beta: float
    sigma2: float
    steps: int
    lr: float
    num_copies: int
    init_alpha: float
    seed: int


@dataclass(frozen=True)
class M2IBAttribution(PairAttribution):
    """Result of :meth:`M2IB.attribute` for B (image, text) pairs.

    Common views (:class:`~lico_lightning.explain.PairAttribution`): M2IB bottlenecks ONE
    tower for the whole other input, so

    * ``tower="image"``: :meth:`image_map` is :attr:`attribution` — one map per (image,
      caption) pair, the information of each patch the caption's embedding needs. There is
      no map per token span (:meth:`span_map` raises): to ground a phrase, explain the phrase
      as its own caption (``texts=[phrase]``), which is what the M2IB paper does;
    * ``tower="text"``: :meth:`token_scores` is :attr:`attribution` (per caption token, for
      the whole image); no box scores.

    Attributes:
        tower: the explained tower, ``"image"`` or ``"text"``.
        attribution: information (nats) that passes the bottleneck per input element, summed
            over the block's channels. Image: ``(B, Hp, Wp)`` patch map (the class token is
            left out). Text: ``(B, S)`` token scores; SOT, EOT and the padding after EOT are 0
            (SOT and EOT are bottlenecked like every token up to EOT but are not caption
            content; padding is not bottlenecked at all).
        token_capacity: ``(B, T)`` the same sum for every token of the block (class token,
            SOT and EOT included; 0 where no bottleneck was applied).
        capacity: ``(B,)`` the compression term at the final gates, the KL per bottlenecked
            element (nats).
        fit: ``(B,)`` mean cosine similarity between the bottlenecked embedding and the other
            modality's embedding at the final gates (fresh noise, Q copies).
        score: ``(B,)`` the model's score of each pair without bottleneck
            (:meth:`DualEncoder.similarity`).
        losses: ``(steps, B)`` the loss of each pair at every optimisation step.
        settings: the hyperparameters used.
        image_size: ``(H, W)`` of the input images (image tower), else ``None``.
    """

    tower: str
    attribution: Tensor
    token_capacity: Tensor
    capacity: Tensor
    fit: Tensor
    score: Tensor
    losses: Tensor
    settings: M2IBSettings
    image_size: tuple[int, int] | None = None

    method = "m2ib"

    @property
    def views(self) -> frozenset[str]:
        """``{"image_map"}`` for the image tower, ``{"token_scores"}`` for the text tower."""
        return frozenset({"image_map" if self.tower == "image" else "token_scores"})

    def image_map(self) -> Tensor:
        """``(B, Hp, Wp)`` information per patch (nats) for the whole caption (image tower)."""
        if self.tower != "image":
            raise self._missing("image_map")
        return self.attribution

    def token_scores(self) -> Tensor:
        """``(B, S)`` information per caption token (nats) for the whole image (text tower)."""
        if self.tower != "text":
            raise self._missing("token_scores")
        return self.attribution

    def _why_not(self, view: str) -> str:
        if view == "span_map" and self.tower == "image":
            return (
                ": M2IB gives one image map per (image, caption) pair, not per token span; "
                "explain the phrase as its own caption (texts=[phrase]) and use image_map()."
            )
        return f" (tower={self.tower!r}: explain the other tower for {view})."


@dataclass
class _Prepared:
    inputs: Tensor  # (B, ...) inputs of the explained tower (images or tokens)
    features: Tensor  # (B, T, D) output R of the bottlenecked block, optimisation dtype
    model_dtype: torch.dtype
    valid: Tensor  # (B, T) bool, tokens that get a bottleneck
    content: Tensor  # (B, T) bool, tokens reported in `attribution`
    target: Tensor  # (B, K) the other modality's embedding (constant)
    score: Tensor  # (B,)


@register_pair_explainer("m2ib")
class M2IB(PairExplainer):
    """Multi-modal information bottleneck attribution (M2IB) for one tower of a dual encoder.

    For every pair b, a gate :math:`\\lambda_b = \\mathrm{sigmoid}(\\alpha_b)` per token and per
    channel of the output :math:`R_b` of block ``layer`` of ``tower`` mixes it with noise
    (paper eqs. 4–5), and :math:`\\alpha_b` minimises (negated eq. 15)

    .. math::
        Z_b = \\lambda_b \\odot R_b + \\sigma (1-\\lambda_b) \\odot \\varepsilon,
        \\quad \\varepsilon \\sim \\mathcal{N}(0, I)

        \\mathcal{L}_b(\\alpha_b) = \\beta \\, \\overline{\\mathrm{KL}}\\big(
        \\mathcal{N}(\\lambda_b R_b, \\sigma^2 (1-\\lambda_b)^2) \\,\\|\\, \\mathcal{N}(0, I)\\big)
        - \\frac{1}{Q} \\sum_{q=1}^{Q} \\cos\\big(g(Z_{bq}), e_b\\big)

    where :math:`g` is the rest of the tower (blocks after ``layer``, pooling, projection),
    :math:`e_b` the other modality's embedding (computed once, without gradients), Q =
    ``num_copies`` noisy copies, and :math:`\\overline{\\mathrm{KL}}` the KL averaged over the
    bottlenecked elements (see :func:`~lico_lightning.functional.m2ib.m2ib_objective`). Adam
    (``lr``) runs ``steps`` steps from :math:`\\alpha = ` ``init_alpha``. The attribution of a
    token is :math:`\\sum_d \\mathrm{KL}_{td}` at the final gates.

    All B pairs of a call are optimised together in one batched forward of B·Q copies: their
    losses are independent, so this equals explaining each pair alone (Adam is elementwise).
    The noise is drawn per step as ``(Q, T, D)`` from a ``torch.Generator`` seeded with
    ``seed`` at every call and shared by all pairs, so a pair's result does not depend on the
    other pairs of the call and repeated calls are identical.

    Text tower: tokens up to and including EOT are bottlenecked; padding after EOT is left
    untouched (it cannot change a causal tower's EOT embedding).

    The model is not perturbed: its parameters are frozen while explaining (``requires_grad``
    restored after, ``.grad`` never written — only :math:`\\alpha` is differentiated, with
    ``torch.autograd.grad``), its modules' train/eval modes and its hooks are restored also on
    error, and it works inside ``torch.inference_mode`` (e.g. Lightning validation).

    Args:
        encoder: the dual encoder (e.g. :class:`OpenCLIPDualEncoder`); its ``tower`` must
            expose token layers (open_clip: VisionTransformer image towers and the built-in
            text transformer).
        tower: ``"image"`` (patch map) or ``"text"`` (token scores).
        layer: index of the block after which the bottleneck sits (0-based, negative counts
            from the end). Default 9, the paper's choice for CLIP ViT-B/32 and its 12-block
            text transformer.
        beta: weight :math:`\\beta \\ge 0` of the compression term (paper: 0.1).
        sigma2: noise variance :math:`\\sigma^2 > 0` (paper: 1).
        steps: Adam steps (paper: 10).
        lr: Adam learning rate (paper: 1).
        num_copies: Q noisy copies per pair (paper: 10).
        init_alpha: initial gate logit, :math:`\\mathrm{sigmoid}(5) \\approx 0.993` (almost
            open), as in the reference code.
        seed: seed of the noise generator.
        max_pairs: optimise at most this many pairs per batched forward (``max_pairs · Q``
            copies); larger calls are split into chunks with identical results. ``None``: all
            pairs of a call at once.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> m2ib = M2IB(enc, "image", layer=0, steps=2, num_copies=2)
        >>> images = torch.randn(2, 3, 32, 32)
        >>> tokens = enc.tokenize(["a dog", "a red car"])
        >>> out = m2ib.attribute(images, tokens)
        >>> out.attribution.shape, out.upsample().shape, out.capacity.shape
        (torch.Size([2, 4, 4]), torch.Size([2, 32, 32]), torch.Size([2]))
        >>> M2IB(enc, "text", layer=-1, steps=2, num_copies=2)(images, tokens).attribution.shape
        torch.Size([2, 77])
    """

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        tower: Tower = "image",
        *,
        layer: int = 9,
        beta: float = 0.1,
        sigma2: float = 1.0,
        steps: int = 10,
        lr: float = 1.0,
        num_copies: int = 10,
        init_alpha: float = 5.0,
        seed: int = 0,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__(encoder)
        encoder = self.encoder
        check_choice("tower", tower, _TOWERS)
        # raises for towers without token layers (listing what is supported) and bad indices
        encoder.layer(tower, layer)
        if tower == "image" and encoder.image_spec.grid_size is None:
            raise ValueError(
                "Expected an image tower with a patch grid (ViT) for image attributions, but "
                f"{type(encoder).__name__}.image_spec.grid_size is None."
            )
        check_real("beta", beta, low=0.0, strict=False)
        check_real("sigma2", sigma2, low=0.0, strict=True)
        check_real("lr", lr, low=0.0, strict=True)
        check_real("init_alpha", init_alpha)
        check_int("steps", steps, 1)
        check_int("num_copies", num_copies, 1)
        check_int("seed", seed, 0)
        if max_pairs is not None:
            check_int("max_pairs", max_pairs, 1)
        self.settings = M2IBSettings(
            tower=tower,
            layer=layer,
            beta=float(beta),
            sigma2=float(sigma2),
            steps=steps,
            lr=float(lr),
            num_copies=num_copies,
            init_alpha=float(init_alpha),
            seed=seed,
        )
        self.max_pairs = max_pairs

    # ------------------------------------------------------------------ public
    def attribute(self, images: Tensor, texts: Tensor | Sequence[str]) -> M2IBAttribution:
        """Explain B (image, caption) pairs.

        Args:
            images: ``(B, C, H, W)`` normalised images (finite).
            texts: ``(B, S)`` token ids (:meth:`DualEncoder.tokenize`) or B captions.

        Returns:
            :class:`M2IBAttribution` (tensors on the model's device).
        """
        images, tokens = self._check_pairs(images, texts)
        chunk = self.max_pairs or images.shape[0]
        if images.shape[0] <= chunk:
            return self._attribute(images, tokens)
        parts = [
            self._attribute(images[i : i + chunk], tokens[i : i + chunk])
            for i in range(0, images.shape[0], chunk)
        ]
        first = parts[0]
        return M2IBAttribution(
            tower=first.tower,
            attribution=torch.cat([p.attribution for p in parts]),
            token_capacity=torch.cat([p.token_capacity for p in parts]),
            capacity=torch.cat([p.capacity for p in parts]),
            fit=torch.cat([p.fit for p in parts]),
            score=torch.cat([p.score for p in parts]),
            losses=torch.cat([p.losses for p in parts], dim=1),
            settings=first.settings,
            image_size=first.image_size,
        )

    def _attribute(self, images: Tensor, tokens: Tensor) -> M2IBAttribution:
        s = self.settings
        with self._session(images, tokens) as ctx:
            device = ctx.features.device
            dtype = ctx.features.dtype
            b, t, d = ctx.features.shape
            alpha = torch.full((b, t, d), s.init_alpha, dtype=dtype, device=device)
            alpha.requires_grad_(True)
            optimizer = torch.optim.Adam([alpha], lr=s.lr)
            generator = torch.Generator(device=device)
            generator.manual_seed(s.seed)
            inputs = ctx.inputs.repeat_interleave(s.num_copies, 0)
            losses = []
            for _ in range(s.steps):
                noise = torch.randn(
                    (s.num_copies, t, d), generator=generator, device=device, dtype=dtype
                )
                loss = self._loss(ctx, inputs, alpha, noise)
                (grad,) = torch.autograd.grad(loss.sum(), [alpha])
                alpha.grad = grad
                optimizer.step()
                losses.append(loss.detach())
            alpha = alpha.detach()
            with torch.no_grad():
                noise = torch.randn(
                    (s.num_copies, t, d), generator=generator, device=device, dtype=dtype
                )
                emb = self._embed(ctx, inputs, alpha, noise)
                fit = F.cosine_similarity(emb, ctx.target[:, None].to(emb.dtype), dim=-1)
                kl = bottleneck_capacity(ctx.features, alpha, s.sigma2)
                valid = ctx.valid.to(kl.dtype)
                token_capacity = kl.sum(-1) * valid
                capacity = token_capacity.sum(-1) / (valid.sum(-1).clamp_min(1.0) * d)
                shown = token_capacity * ctx.content.to(kl.dtype)
                if s.tower == "image":
                    spec = self.encoder.image_spec
                    if spec.grid_size is None:  # checked in __init__
                        raise ValueError(
                            "Expected an image tower with a patch grid (ViT), but "
                            f"{type(self.encoder).__name__}.image_spec.grid_size is None."
                        )
                    hp, wp = spec.grid_size
                    attribution = shown[:, spec.num_prefix_tokens :].reshape(b, hp, wp)
                    image_size: tuple[int, int] | None = spec.image_size
                else:
                    attribution = shown
                    image_size = None
            return M2IBAttribution(
                tower=s.tower,
                attribution=attribution,
                token_capacity=token_capacity,
                capacity=capacity,
                fit=fit.mean(-1),
                score=ctx.score,
                losses=torch.stack(losses),
                settings=s,
                image_size=image_size,
            )

    def objective(
        self, images: Tensor, texts: Tensor | Sequence[str], alpha: Tensor, noise: Tensor
    ) -> Tensor:
        """Evaluate the per-pair loss :math:`\\mathcal{L}_b(\\alpha_b)` for given gates and noise.

        For inspection and tests; :meth:`attribute` minimises this function.

        Args:
            images: ``(B, C, H, W)`` normalised images.
            texts: ``(B, S)`` token ids or B captions.
            alpha: gate logits ``(B, T, D)`` for the T tokens and D channels of the block.
            noise: standard normal noise ``(Q, T, D)`` shared by the pairs.

        Returns:
            ``(B,)`` loss values (detached).
        """
        images, tokens = self._check_pairs(images, texts)
        check_tensor("alpha", alpha, ndim=3, floating=True)
        check_tensor("noise", noise, ndim=3, floating=True)
        with self._session(images, tokens) as ctx, torch.no_grad():
            shape = tuple(ctx.features.shape)
            if tuple(alpha.shape) != shape or tuple(noise.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"Expected `alpha` of shape {shape} and `noise` of shape (Q, {shape[1]}, "
                    f"{shape[2]}), but got {tuple(alpha.shape)} and {tuple(noise.shape)}."
                )
            like = ctx.features
            alpha = alpha.detach().to(device=like.device, dtype=like.dtype)
            noise = noise.detach().to(device=like.device, dtype=like.dtype)
            inputs = ctx.inputs.repeat_interleave(noise.shape[0], 0)
            return self._loss(ctx, inputs, alpha, noise)

    # ---------------------------------------------------------------- internals
    @contextmanager
    def _session(self, images: Tensor, tokens: Tensor) -> Iterator[_Prepared]:
        """Eval mode, frozen parameters, grad enabled outside inference mode; the constant
        target, the block output R and the masks, computed once without gradients."""
        enc = self.encoder
        s = self.settings
        with ExitStack() as stack:
            stack.enter_context(explanation_mode(grad=True))
            stack.enter_context(enc.explaining())
            stack.enter_context(restored_requires_grad(enc.module, freeze=True))
            device = module_device(enc.module, images.device)
            images = images.detach().to(device).clone()  # out of inference mode
            tokens = tokens.detach().to(device).clone()
            with torch.no_grad():
                if s.tower == "image":
                    target = enc.encode_text(tokens)
                    with enc.capture("image", s.layer, on="output") as seen:
                        own = enc.encode_image(images)
                    similarity = enc.similarity(own, target)
                    inputs = images
                else:
                    target = enc.encode_image(images)
                    with enc.capture("text", s.layer, on="output") as seen:
                        own = enc.encode_text(tokens)
                    similarity = enc.similarity(target, own)
                    inputs = tokens
            if len(seen) != 1:
                raise RuntimeError(
                    f"Expected block {s.layer} of the {s.tower} tower to run once per forward, "
                    f"but it ran {len(seen)} times."
                )
            r = seen[0].detach()
            b = images.shape[0]
            t = r.shape[1]
            if r.ndim != 3 or r.shape[0] != b:
                raise ValueError(
                    f"Expected block {s.layer} of the {s.tower} tower to output (B={b}, T, D) "
                    f"tokens, but got {tuple(r.shape)}."
                )
            positions = torch.arange(t, device=device)[None]
            if s.tower == "image":
                spec = enc.image_spec
                want = spec.num_prefix_tokens + (spec.num_patches or 0)
                if t != want:
                    raise ValueError(
                        f"Expected block {s.layer} of the image tower to output {want} tokens "
                        f"({spec.num_prefix_tokens} prefix + {spec.grid_size} patches), but got "
                        f"{t}."
                    )
                valid = torch.ones(b, t, dtype=torch.bool, device=device)
                content = positions >= spec.num_prefix_tokens
                content = content.expand(b, t)
            else:
                if t != tokens.shape[1]:
                    raise ValueError(
                        f"Expected block {s.layer} of the text tower to output one token per "
                        f"position ({tokens.shape[1]}), but got {t}."
                    )
                valid, content = enc.caption_masks(tokens)
            opt_dtype = torch.promote_types(r.dtype, torch.float32)
            yield _Prepared(
                inputs=inputs,
                features=r.to(opt_dtype),
                model_dtype=r.dtype,
                valid=valid,
                content=content,
                target=target.detach(),
                score=similarity.detach(),
            )

    def _embed(self, ctx: _Prepared, inputs: Tensor, alpha: Tensor, noise: Tensor) -> Tensor:
        """Embeddings ``(B, Q, K)`` of the explained tower with the bottleneck in place."""
        s = self.settings
        b, t, d = ctx.features.shape
        q = noise.shape[0]
        z = gaussian_bottleneck(ctx.features[:, None], alpha[:, None], noise[None], s.sigma2)
        z = torch.where(ctx.valid[:, None, :, None], z, ctx.features[:, None])
        z = z.reshape(b * q, t, d).to(ctx.model_dtype)

        def replace(x: Tensor) -> Tensor:
            if x.shape != z.shape:
                raise RuntimeError(
                    f"Expected block {s.layer} of the {s.tower} tower to output {tuple(z.shape)} "
                    f"during the bottleneck forward, but got {tuple(x.shape)}."
                )
            return z

        encode: Callable[[Tensor], Tensor] = (
            self.encoder.encode_image if s.tower == "image" else self.encoder.encode_text
        )
        with self.encoder.intervene(s.tower, s.layer, replace, on="output"):
            emb = encode(inputs)
        return emb.reshape(b, q, -1).to(ctx.features.dtype)

    def _loss(self, ctx: _Prepared, inputs: Tensor, alpha: Tensor, noise: Tensor) -> Tensor:
        s = self.settings
        emb = self._embed(ctx, inputs, alpha, noise)
        kl = bottleneck_capacity(ctx.features, alpha, s.sigma2)
        return m2ib_objective(kl, emb, ctx.target, s.beta, ctx.valid)
