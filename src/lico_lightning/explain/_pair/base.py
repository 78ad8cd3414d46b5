"""One interface for every dual-encoder (image–caption) explainer, its result type and registry.

``explainer.attribute(images, texts, ...) -> PairAttribution`` with ``images (B, C, H, W)``
(normalised as the model expects) and ``texts`` either ``(B, S)`` token ids or B captions.
Every :class:`PairAttribution` answers the same questions a grounding monitor asks, whatever
method produced it:

* :meth:`~PairAttribution.span_map` ``(span) -> (B, Hp, Wp)``: image map of a caption token span;
* :meth:`~PairAttribution.image_map` ``() -> (B, Hp, Wp)``: image map of the whole caption;
* :meth:`~PairAttribution.box_scores` ``(boxes) -> (B, S)``: score of every caption token for
  the patches in an image box;
* :meth:`~PairAttribution.token_scores` ``() -> (B, S)``: score of every caption token for the
  whole image;
* :meth:`~PairAttribution.upsample` ``(maps) -> (..., H, W)``: patch maps resized to pixels;
* :attr:`~PairAttribution.score` ``(B,)``, :attr:`~PairAttribution.method`,
  :attr:`~PairAttribution.image_size`, :attr:`~PairAttribution.views`.

Not every method can answer every question (M2IB explains one tower for the whole other
input, so it has no span map); :attr:`PairAttribution.views` lists the ones a result answers
and the others raise ``ValueError`` saying why. The richer, method-specific views stay on the
subclasses: :class:`~lico_lightning.explain.InteractionAttribution` (token × patch
interactions, completeness), :class:`~lico_lightning.explain.FIxLIPAttribution` (Banzhaf
values and pairs, the surrogate game), :class:`~lico_lightning.explain.M2IBAttribution`
(capacities, the optimisation trace).

Explainers are registered by name: :func:`list_pair_explainers`,
:func:`create_pair_explainer` (an open_clip model is wrapped in
:class:`~lico_lightning.explain.OpenCLIPDualEncoder` where a dual encoder is expected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._registry import Registry
from lico_lightning._validation import check_choice, check_finite, check_int_pair, check_tensor
from lico_lightning.explain._pair.dual_encoder import DualEncoder
from lico_lightning.explain._pair.open_clip_encoder import as_dual_encoder
from lico_lightning.functional import box_to_mask, upsample_saliency

__all__ = [
    "PAIR_EXPLAINERS",
    "PAIR_VIEWS",
    "PairAttribution",
    "PairExplainer",
    "create_pair_explainer",
    "list_pair_explainers",
    "register_pair_explainer",
]

#: The common views of :class:`PairAttribution`.
PAIR_VIEWS = ("span_map", "image_map", "box_scores", "token_scores")

Span = tuple[int, int] | Tensor
P = TypeVar("P", bound="type[PairExplainer]")


# ----------------------------------------------------------------------------- result type
class PairAttribution:
    """What every dual-encoder explainer returns for B image–caption pairs (common views).

    Shapes: ``B`` pairs, ``S`` tokens of a tokenised caption (position 0 is SOT), ``(Hp, Wp)``
    the grid of image players (the ViT patch grid, or FIxLIP's ``grid``), ``(H, W)`` the input
    image size. Token spans are ``(start, end)``, end exclusive, and must lie inside the
    caption's content, ``1 <= start < end <= eot`` (not over SOT, EOT or padding):
    :meth:`~lico_lightning.explain.DualEncoder.phrase_span` returns such spans.

    Subclasses (dataclasses) provide :attr:`method`, :attr:`score`, :attr:`image_size` and
    :attr:`views`, and implement the views they answer; the rest raise ``ValueError`` saying
    why.
    """

    #: Name of the method that produced the result.
    method: str
    #: ``(B,)`` the model's score of each pair (logit scale · cosine + bias).
    score: Tensor

    # read-only here, so that subclasses may answer them by a field, a class attribute or a
    # property
    @property
    def views(self) -> frozenset[str]:
        """The common views this result answers (a subset of :data:`PAIR_VIEWS`)."""
        return frozenset()

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the explained images (``None`` without an image side)."""
        raise NotImplementedError(f"{type(self).__name__} does not define `image_size`.")

    def span_map(self, span: Span) -> Tensor:
        """Image map ``(B, Hp, Wp)`` of the caption tokens ``span`` (one span for every pair,
        or a ``(B, 2)`` long tensor with one span per pair)."""
        raise self._missing("span_map")

    def image_map(self) -> Tensor:
        """Image map ``(B, Hp, Wp)`` for the whole caption."""
        raise self._missing("image_map")

    def box_scores(self, boxes: Tensor) -> Tensor:
        """Score ``(B, S)`` of every caption token for the image patches inside ``boxes``
        ``(B, 4)`` ``(x1, y1, x2, y2)`` in pixels (a patch counts when its centre is inside);
        zero at SOT, EOT and padding unless the method attributes them."""
        raise self._missing("box_scores")

    def token_scores(self) -> Tensor:
        """Score ``(B, S)`` of every caption token for the whole image."""
        raise self._missing("token_scores")

    def upsample(
        self,
        maps: Tensor | None = None,
        *,
        size: tuple[int, int] | None = None,
        mode: Literal["bilinear", "nearest"] = "bilinear",
    ) -> Tensor:
        """Resize patch maps ``(..., Hp, Wp)`` to pixels ``(..., H, W)``.

        Args:
            maps: patch maps, e.g. :meth:`span_map`'s; default :meth:`image_map`.
            size: output ``(H, W)``; default :attr:`image_size`.
            mode: ``"bilinear"`` (the package's resizing,
                :func:`~lico_lightning.functional.upsample_saliency`) or ``"nearest"``
                (every pixel shows its patch's value).
        """
        check_choice("mode", mode, ("bilinear", "nearest"))
        if size is None:
            if self.image_size is None:
                raise ValueError(
                    f"Expected a result with an image side to upsample, but {self.method} "
                    "explained no image map."
                )
            size = self.image_size
        size = check_int_pair("size", size)
        maps = self.image_map() if maps is None else maps
        check_tensor("maps", maps, floating=True)
        if maps.ndim < 2:
            raise ValueError(
                f"Expected `maps` of shape (..., Hp, Wp), but got {tuple(maps.shape)}."
            )
        flat = maps.reshape(-1, *maps.shape[-2:])
        if mode == "bilinear":
            out = upsample_saliency(flat, size)
        else:
            out = F.interpolate(flat[:, None], size=size, mode="nearest")[:, 0]
        return out.reshape(*maps.shape[:-2], *size)

    def _missing(self, view: str) -> ValueError:
        return ValueError(
            f"Expected a result that answers {view!r}, but {self.method} answers only "
            f"{sorted(self.views)}{self._why_not(view)}"
        )

    def _why_not(self, view: str) -> str:
        """Subclasses: why ``view`` is not available (appended to the error)."""
        return "."


def check_token_spans(span: object, eot: Tensor) -> Tensor:
    """Checked ``(B, 2)`` long spans inside each caption's content ``[1, eot_b)``.

    Args:
        span: ``(start, end)`` ints for every caption, or a ``(B, 2)`` integer tensor.
        eot: ``(B,)`` EOT position of every caption (its content is ``1 .. eot - 1``).

    Raises:
        TypeError: ``span`` is neither a pair of ints nor an integer tensor.
        ValueError: wrong shape, or a span reaching SOT, EOT or padding (the message gives the
            valid range of the caption).
    """
    n = int(eot.shape[0])
    if isinstance(span, Tensor):
        if span.is_floating_point() or span.dtype == torch.bool:
            raise TypeError(f"Expected `span` to be an integer tensor, but got {span.dtype}.")
        if tuple(span.shape) != (n, 2):
            raise ValueError(
                f"Expected `span` as (start, end) or a tensor of shape ({n}, 2), but got "
                f"{tuple(span.shape)}."
            )
        spans = span.long().to(eot.device)
    else:
        if (
            not isinstance(span, (tuple, list))
            or len(span) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in span)
        ):
            raise TypeError(f"Expected `span` as (start, end) ints, but got {span!r}.")
        spans = torch.tensor([list(span)] * n, dtype=torch.long, device=eot.device)
    start, end = spans[:, 0], spans[:, 1]
    bad = (start < 1) | (end > eot) | (start >= end)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        e = int(eot[i])
        raise ValueError(
            f"Expected a token span inside the caption of pair {i}, 1 <= start < end <= {e} "
            f"(position 0 is SOT, {e} is EOT, padding follows), but got "
            f"{spans[i].tolist()}."
        )
    return spans


def span_weights(spans: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """``(B, length)`` indicator of each span (positions ``start <= t < end``)."""
    pos = torch.arange(length, device=spans.device)[None]
    return ((pos >= spans[:, :1]) & (pos < spans[:, 1:])).to(dtype)


def box_cells(
    boxes: object, n: int, grid_size: tuple[int, int], image_size: tuple[int, int]
) -> Tensor:
    """``(n, Hp, Wp)`` bool grid cells whose centres lie in each of the ``(n, 4)`` boxes
    (checked by :func:`~lico_lightning.functional.box_to_mask`: finite, inside the image)."""
    boxes = check_tensor("boxes", boxes, ndim=2)
    if boxes.shape[0] != n:
        raise ValueError(f"Expected one box per pair ({n}), but got {boxes.shape[0]} boxes.")
    return box_to_mask(boxes, grid_size, image_size).bool()


# ----------------------------------------------------------------------------- explainers
class PairExplainer(ABC):
    """Base class of dual-encoder explainers: ``attribute(images, texts, ...) -> PairAttribution``.

    Args:
        encoder: a :class:`~lico_lightning.explain.DualEncoder`, or an open_clip ``CLIP`` /
            ``CustomTextCLIP`` model (wrapped in
            :class:`~lico_lightning.explain.OpenCLIPDualEncoder`).

    Every explainer checks its inputs before any work (images ``(B, C, H, W)`` finite floats of
    the tower's size, captions with an EOT, equal batch sizes), leaves the model as it found it
    (train/eval mode, ``requires_grad``, ``.grad``, hooks) and works inside
    ``torch.inference_mode``.
    """

    #: Registry name (set by :func:`register_pair_explainer`).
    name: ClassVar[str] = ""

    def __init__(self, encoder: DualEncoder | nn.Module) -> None:
        self.encoder = as_dual_encoder(encoder)

    @abstractmethod
    def attribute(self, *args: Any, **kwargs: Any) -> PairAttribution:
        """``attribute(images, texts, ...)``: explain the pairs ``(images[b], texts[b])``.

        ``images`` ``(B, C, H, W)``, ``texts`` ``(B, S)`` token ids or B captions, then
        method-specific keyword options; returns a :class:`PairAttribution` (subclass).
        """

    def __call__(self, *args: Any, **kwargs: Any) -> PairAttribution:
        return self.attribute(*args, **kwargs)

    def _check_images(self, images: object, name: str = "images") -> Tensor:
        images = check_tensor(name, images, ndim=4, floating=True)
        self.encoder.check_images(images)
        return check_finite(name, images)

    def _check_pairs(self, images: object, texts: Tensor | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Checked ``(B, C, H, W)`` finite images and ``(B, S)`` tokens with an EOT each."""
        checked = self._check_images(images)
        checked, tokens = self.encoder.check_pairs(checked, texts)
        self.encoder.eot_positions(tokens)
        return checked, tokens

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.encoder).__name__})"


#: Dual-encoder explainers by name (:func:`list_pair_explainers`, :func:`create_pair_explainer`).
PAIR_EXPLAINERS: Registry[type[PairExplainer]] = Registry("pair explainer", base=PairExplainer)


def register_pair_explainer(name: str, *, overwrite: bool = False) -> Callable[[P], P]:
    """Class decorator: register a :class:`PairExplainer` subclass under ``name``.

    Raises:
        TypeError: the decorated object is not a :class:`PairExplainer` subclass.
        ValueError: ``name`` is registered already and ``overwrite`` is False.

    Example:
        >>> from lico_lightning.explain import PAIR_EXPLAINERS, PairExplainer, list_pair_explainers
        >>> @register_pair_explainer("my_pairs")
        ... class Mine(PairExplainer):
        ...     def attribute(self, images, texts):
        ...         raise NotImplementedError
        >>> "my_pairs" in list_pair_explainers()
        True
        >>> PAIR_EXPLAINERS.unregister("my_pairs")
    """

    def decorator(cls: P) -> P:
        PAIR_EXPLAINERS.register(name, cls, overwrite=overwrite)
        cls.name = name
        return cls

    return decorator


def list_pair_explainers() -> list[str]:
    """Names of the registered dual-encoder explainers, sorted.

    Example:
        >>> from lico_lightning.explain import list_pair_explainers
        >>> list_pair_explainers()
        ['fixlip', 'integrated_jacobians', 'interaction_cam', 'itsm', 'm2ib']
    """
    return PAIR_EXPLAINERS.names()


def create_pair_explainer(name: str, dual_encoder: object, **kwargs: Any) -> PairExplainer:
    """Create the explainer ``name`` for ``dual_encoder`` (a DualEncoder or an open_clip model).

    Raises:
        ValueError: unknown ``name`` (lists the registered ones) or an option the explainer
            does not have (lists its options).
        TypeError: ``dual_encoder`` is not a dual encoder.

    Example:
        >>> from lico_lightning.explain import create_pair_explainer
        >>> from lico_lightning.testing import tiny_clip
        >>> ij = create_pair_explainer("integrated_jacobians", tiny_clip(), n_steps=4)
        >>> att = ij.attribute(torch.zeros(1, 3, 32, 32), ["a red dog"])
        >>> att.span_map((2, 4)).shape, att.upsample(att.image_map()).shape
        (torch.Size([1, 4, 4]), torch.Size([1, 32, 32]))
        >>> create_pair_explainer("m2ib", tiny_clip(), stepz=3)
        Traceback (most recent call last):
        ...
        ValueError: Expected options of the 'm2ib' pair explainer among ['beta', 'init_alpha', 'layer', 'lr', 'max_pairs', 'num_copies', 'seed', 'sigma2', 'steps', 'tower'], but got 'stepz'.
    """
    PAIR_EXPLAINERS.check_options(name, kwargs)
    cls = PAIR_EXPLAINERS.get(name)
    return cls(as_dual_encoder(dual_encoder), **kwargs)
