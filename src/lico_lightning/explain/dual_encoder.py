"""One interface for dual encoders (image tower + text tower compared by a scaled similarity).

Explainers for CLIP-like models (integrated Jacobians, Interaction-CAM, ITSM, M2IB, FIxLIP)
talk to the model only through :class:`DualEncoder`. It exposes

* the two towers: :meth:`DualEncoder.encode_image` ``(B, C, H, W) -> (B, K)`` and
  :meth:`DualEncoder.encode_text` ``(B, S) -> (B, K)`` (optionally with individual text tokens
  masked out of attention), and the score :meth:`DualEncoder.similarity`
  (logit scale · cosine + bias);
* what an explainer needs to know about the inputs: :class:`ImageSpec` (input size, patch
  grid, prefix tokens, normalisation) and :class:`TextSpec` (context length, SOT/EOT/pad ids);
* the transformer blocks of each tower, reachable **through hooks only**:
  :meth:`DualEncoder.intervene` observes or replaces a block's input or output
  (the model's forward code is never copied and its module tree never changed), and
  :meth:`DualEncoder.capture` records them. Every hook is removed when the ``with`` block
  ends, also on error.

:class:`OpenCLIPDualEncoder` implements it for open_clip models. Other dual encoders plug in by
subclassing :class:`DualEncoder`; the minimal set to implement is ``module``, ``image_spec``,
``text_spec``, ``encode_image``, ``encode_text``, ``logit_scale`` and ``tokenize``. Layer-level
explainers (integrated Jacobians, M2IB, ITSM on hidden layers) also need ``image_layers`` /
``text_layers``; ITSM needs ``image_token_head`` / ``text_token_head``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning._safety import restored_training_modes
from lico_lightning._validation import check_choice, check_tensor

__all__ = [
    "DualEncoder",
    "ImageSpec",
    "OpenCLIPDualEncoder",
    "TextSpec",
]

Tower = Literal["image", "text"]
Where = Literal["input", "output"]
_TOWERS = ("image", "text")
_WHERES = ("input", "output")

# open_clip's default normalisation (used when a model carries no preprocess config).
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSpec:
    """What explainers need to know about the image input and the image tower's tokens.

    Attributes:
        image_size: input ``(H, W)`` in pixels.
        mean: per-channel mean used to normalise images (a black image is ``-mean / std``).
        std: per-channel standard deviation used to normalise images.
        patch_size: ``(ph, pw)`` of a patch token, ``None`` for towers without patch tokens.
        grid_size: patch grid ``(Hp, Wp)``, ``None`` for towers without patch tokens.
        num_prefix_tokens: tokens before the ``Hp·Wp`` patch tokens in a block's token sequence
            (1 for a class token). Patch tokens follow in row-major order.
    """

    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    patch_size: tuple[int, int] | None
    grid_size: tuple[int, int] | None
    num_prefix_tokens: int

    @property
    def num_patches(self) -> int | None:
        """``Hp·Wp``, or ``None`` for towers without patch tokens."""
        return None if self.grid_size is None else self.grid_size[0] * self.grid_size[1]


@dataclass(frozen=True)
class TextSpec:
    """Token ids and layout of the text tower.

    Attributes:
        context_length: S, the length of a tokenised caption.
        sot_id: start-of-text token id (always at position 0).
        eot_id: end-of-text token id (the text embedding is read at its position).
        pad_id: padding token id (after EOT, and the filler of the text reference).
        causal: True if a token only attends to earlier tokens, so tokens after EOT cannot
            change the text embedding.
    """

    context_length: int
    sot_id: int
    eot_id: int
    pad_id: int
    causal: bool


class DualEncoder(ABC):
    """Interface of a dual encoder ``s(a, b) = scale · <g(a), h(b)> + bias``.

    Subclasses implement the abstract members; everything else (similarity, EOT positions,
    hooks, patch masking, eval-mode bookkeeping) is provided here once.

    Embeddings returned by :meth:`encode_image` / :meth:`encode_text` are *unnormalised*;
    :meth:`similarity` normalises them when :attr:`normalize_embeddings` is True (cosine, as in
    CLIP) and uses the raw dot product otherwise.
    """

    #: True: the score uses cosine similarity (embeddings L2-normalised); False: dot product.
    normalize_embeddings: bool = True

    # ----------------------------------------------------------------- required members
    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The wrapped model (for mode, parameter and hook bookkeeping)."""

    @property
    @abstractmethod
    def image_spec(self) -> ImageSpec:
        """Input size, patch grid, prefix tokens and normalisation of the image tower."""

    @property
    @abstractmethod
    def text_spec(self) -> TextSpec:
        """Context length and special token ids of the text tower."""

    @abstractmethod
    def encode_image(self, images: Tensor) -> Tensor:
        """Embed normalised images ``(B, C, H, W)`` into ``(B, K)`` (not L2-normalised)."""

    @abstractmethod
    def encode_text(self, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """Embed token ids ``(B, S)`` into ``(B, K)`` (not L2-normalised).

        ``token_mask`` (``(B, S)`` bool, True = keep) removes individual tokens from attention;
        SOT and EOT are always kept. Implementations that cannot mask raise ``ValueError``.
        """

    @property
    @abstractmethod
    def logit_scale(self) -> Tensor:
        """Multiplier of the similarity (CLIP: ``exp(logit_scale)``), a 0-dim tensor."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Tokenise captions into ``(B, S)`` long ids (SOT, tokens, EOT, padding)."""

    # ------------------------------------------------------------ optional members
    @property
    def logit_bias(self) -> Tensor | None:
        """Additive bias of the score (SigLIP), or ``None``."""
        return None

    @property
    def image_layers(self) -> Sequence[nn.Module]:
        """Transformer blocks of the image tower, input and output ``(B, T, D)`` tokens."""
        raise ValueError(
            f"Expected a dual encoder with token layers in its image tower, but "
            f"{type(self).__name__} does not expose `image_layers`."
        )

    @property
    def text_layers(self) -> Sequence[nn.Module]:
        """Transformer blocks of the text tower, input and output ``(B, S, D)`` tokens."""
        raise ValueError(
            f"Expected a dual encoder with token layers in its text tower, but "
            f"{type(self).__name__} does not expose `text_layers`."
        )

    def image_token_head(self, tokens: Tensor) -> Tensor:
        """Map every image token ``(B, T, D)`` through the final norm + projection → ``(B, T, K)``."""
        raise ValueError(
            f"Expected a dual encoder with a per-token image head, but {type(self).__name__} "
            "does not implement `image_token_head`."
        )

    def text_token_head(self, tokens: Tensor) -> Tensor:
        """Map every text token ``(B, S, D)`` through the final norm + projection → ``(B, S, K)``."""
        raise ValueError(
            f"Expected a dual encoder with a per-token text head, but {type(self).__name__} "
            "does not implement `text_token_head`."
        )

    def _layers_batch_first(self, tower: Tower) -> bool:
        """Whether the blocks of ``tower`` see ``(B, T, D)`` (True) or ``(T, B, D)``."""
        return True

    def _explaining_contexts(self, stack: ExitStack) -> None:
        """Hook for subclasses: enter extra contexts while explaining (e.g. no checkpointing)."""
        del stack  # nothing extra by default

    # ------------------------------------------------------------ provided members
    def similarity(
        self, image_embeddings: Tensor, text_embeddings: Tensor, *, pairwise: bool = False
    ) -> Tensor:
        """Score of embedding pairs: ``scale · cos(e_a, e_b) + bias`` (or dot product).

        Args:
            image_embeddings: ``(B, K)`` (any tower; text–text pairs work the same way).
            text_embeddings: ``(B, K)``, or ``(B', K)`` when ``pairwise``.
            pairwise: False: row-wise scores ``(B,)``; True: all pairs ``(B, B')``.

        .. math::
            s(a, b) = \\tau \\, \\frac{g(a)^\\top h(b)}{\\lVert g(a)\\rVert \\lVert h(b)\\rVert} + \\beta
        """
        check_tensor("image_embeddings", image_embeddings, ndim=2, floating=True)
        check_tensor("text_embeddings", text_embeddings, ndim=2, floating=True)
        if image_embeddings.shape[-1] != text_embeddings.shape[-1]:
            raise ValueError(
                "Expected embeddings of equal width, but got "
                f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}."
            )
        if not pairwise and image_embeddings.shape[0] != text_embeddings.shape[0]:
            raise ValueError(
                "Expected the same batch size for row-wise similarity, but got "
                f"{image_embeddings.shape[0]} and {text_embeddings.shape[0]} (use pairwise=True)."
            )
        a, b = image_embeddings, text_embeddings
        if self.normalize_embeddings:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        s = a @ b.T if pairwise else (a * b).sum(-1)
        s = self.logit_scale.to(s.dtype) * s
        bias = self.logit_bias
        return s if bias is None else s + bias.to(s.dtype)

    def eot_positions(self, tokens: Tensor) -> Tensor:
        """Position of the first EOT token of every caption, ``(B,)`` long."""
        tokens = self.check_tokens(tokens)
        is_eot = tokens == self.text_spec.eot_id
        if not bool(is_eot.any(-1).all()):
            raise ValueError(
                f"Expected every caption to contain the EOT token {self.text_spec.eot_id}, but "
                f"rows {(~is_eot.any(-1)).nonzero().flatten().tolist()} have none."
            )
        return is_eot.int().argmax(-1)

    def caption_masks(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Two ``(B, S)`` bool masks of tokenised captions: the positions up to and including
        EOT (all a causal tower's text embedding can see), and the caption content strictly
        between SOT and EOT (the tokens explainers attribute or perturb).

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> seen, content = enc.caption_masks(enc.tokenize(["a dog"]))
            >>> seen[0, :5].tolist(), content[0, :5].tolist()
            ([True, True, True, True, False], [False, True, True, False, False])
        """
        eot = self.eot_positions(tokens)[:, None]
        pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
        return pos <= eot, (pos > 0) & (pos < eot)

    def phrase_span(self, caption: str, phrase: str) -> tuple[int, int]:
        """Token positions ``(start, end)`` (end exclusive) of ``phrase`` in ``caption``.

        Both are tokenised with :meth:`tokenize`; the first occurrence of the phrase's tokens
        among the caption's tokens is returned (positions count SOT as 0), ready for
        :meth:`InteractionAttribution.project_span`. Raises ``ValueError`` if absent.

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> enc.phrase_span("a photo of a hot dog", "hot dog")
            (5, 7)
        """
        for name, text in (("caption", caption), ("phrase", phrase)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Expected `{name}` to be a non-empty string, but got {text!r}.")
        tokens = self.tokenize([caption, phrase])
        eot = self.eot_positions(tokens).tolist()
        cap = tokens[0, 1 : eot[0]].tolist()
        sub = tokens[1, 1 : eot[1]].tolist()
        for start in range(len(cap) - len(sub) + 1):
            if cap[start : start + len(sub)] == sub:
                return start + 1, start + 1 + len(sub)
        raise ValueError(f"Expected {phrase!r} to occur in {caption!r}, but it does not.")

    def layers(self, tower: Tower) -> Sequence[nn.Module]:
        """Transformer blocks of ``"image"`` or ``"text"``."""
        check_choice("tower", tower, _TOWERS)
        return self.image_layers if tower == "image" else self.text_layers

    def layer(self, tower: Tower, index: int) -> nn.Module:
        """Block ``index`` (negative counts from the end) of a tower, with a clear error."""
        blocks = self.layers(tower)
        n = len(blocks)
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"Expected `layer` to be an int, but got {type(index).__name__}.")
        if not -n <= index < n:
            raise ValueError(
                f"Expected `layer` in [{-n}, {n}) for the {tower} tower with {n} blocks, "
                f"but got {index}."
            )
        return blocks[index]

    @contextmanager
    def intervene(
        self,
        tower: Tower,
        layer: int,
        fn: Callable[[Tensor], Tensor | None],
        *,
        on: Where = "input",
    ) -> Iterator[None]:
        """Call ``fn`` on a block's input or output tokens during every forward in the block.

        ``fn`` receives the ``(B, T, D)`` tokens (batch first, whatever the model's layout) and
        returns ``None`` to leave them unchanged or a tensor of the same layout that replaces
        them (e.g. interpolated inputs, a bottleneck on the output). Implemented with a forward
        pre-hook (``on="input"``) or forward hook (``on="output"``) that is removed on exit.

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> images = torch.randn(2, 3, 32, 32)
            >>> with enc.intervene("image", -1, lambda x: torch.zeros_like(x)):
            ...     e = enc.encode_image(images)
            >>> torch.allclose(e[0], e[1])  # the last block saw the same (zero) input
            True
        """
        check_choice("on", on, _WHERES)
        if not callable(fn):
            raise TypeError(f"Expected `fn` to be callable, but got {type(fn).__name__}.")
        block = self.layer(tower, layer)
        batch_first = self._layers_batch_first(tower)

        def to_bf(x: Tensor) -> Tensor:
            return x if batch_first else x.transpose(0, 1)

        if on == "input":

            def pre_hook(
                module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
                if not args or not isinstance(args[0], Tensor):
                    raise RuntimeError(
                        f"Expected block {layer} of the {tower} tower to receive its tokens as "
                        "the first positional argument."
                    )
                new = fn(to_bf(args[0]))
                if new is None:
                    return None
                return (to_bf(new), *args[1:]), kwargs

            handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:

            def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
                if not isinstance(output, Tensor):
                    raise RuntimeError(
                        f"Expected block {layer} of the {tower} tower to return a tensor, but "
                        f"got {type(output).__name__}."
                    )
                new = fn(to_bf(output))
                return None if new is None else to_bf(new)

            handle = block.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def allow_shorter_text(self, layer: int) -> Iterator[bool]:
        """Let the text blocks from ``layer`` on run on a prefix of the token sequence.

        Yields True when supported: inside the block, an :meth:`intervene` hook on block
        ``layer``'s input may return only the first ``L`` tokens (``L`` > every EOT position)
        and the text embedding is unchanged for causal text towers, at a fraction of the cost.
        The default yields False (not supported; return full-length tokens).
        """
        self.layer("text", layer)
        yield False

    @contextmanager
    def pooled_rows_only(self, tower: Tower) -> Iterator[bool]:
        """Let the tower's last block compute only the token its embedding is read from.

        Yields True when applied: the embedding is unchanged but the other tokens of the last
        block's output are no longer meaningful (do not capture them). A speed-up for
        explainers that differentiate the embedding many times. The default yields False.
        """
        check_choice("tower", tower, _TOWERS)
        yield False

    @contextmanager
    def capture(self, tower: Tower, layer: int, *, on: Where = "input") -> Iterator[list[Tensor]]:
        """Record a block's input or output tokens ``(B, T, D)`` of every forward in the block.

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> with enc.capture("text", -1, on="output") as seen:
            ...     _ = enc.encode_text(enc.tokenize(["a dog", "a cat"]))
            >>> seen[0].shape
            torch.Size([2, 77, 32])
        """
        records: list[Tensor] = []

        def record(x: Tensor) -> None:
            records.append(x)

        with self.intervene(tower, layer, record, on=on):
            yield records

    @contextmanager
    def explaining(self) -> Iterator[None]:
        """Put the model in eval mode for an explanation and restore every module's mode after.

        Subclasses may add more (open_clip: gradient checkpointing off). Parameters,
        ``requires_grad`` and ``.grad`` are not touched.

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> _ = enc.module.train()
            >>> with enc.explaining():
            ...     enc.module.training
            False
            >>> enc.module.training
            True
        """
        with ExitStack() as stack:
            stack.enter_context(restored_training_modes(self.module))
            self._explaining_contexts(stack)
            yield

    def mask_image_patches(self, images: Tensor, keep: Tensor, fill: float = 0.0) -> Tensor:
        """Set the pixels of dropped grid cells to ``fill`` (0 = the mean colour when normalised).

        Args:
            images: ``(B, C, H, W)`` normalised images.
            keep: ``(B, Hp, Wp)`` bool, True = keep the cell; ``H`` and ``W`` must be multiples
                of ``Hp`` and ``Wp`` (use the tower's patch grid, or any grid for CNN towers).
            fill: value of dropped pixels in normalised space.

        Returns:
            ``(B, C, H, W)`` masked copy.
        """
        check_tensor("images", images, ndim=4, floating=True)
        check_tensor("keep", keep, ndim=3)
        if keep.dtype != torch.bool:
            raise TypeError(f"Expected `keep` to be a bool tensor, but got {keep.dtype}.")
        b, _, h, w = images.shape
        if keep.shape[0] != b:
            raise ValueError(
                f"Expected `keep` with batch size {b} like `images`, but got {keep.shape[0]}."
            )
        hp, wp = keep.shape[1:]
        if h % hp or w % wp:
            raise ValueError(
                f"Expected the image size {(h, w)} to be a multiple of the grid {(hp, wp)}, "
                "but it is not."
            )
        m = keep.repeat_interleave(h // hp, 1).repeat_interleave(w // wp, 2)[:, None]
        return torch.where(m, images, torch.as_tensor(fill, dtype=images.dtype))

    def black_image(self, like: Tensor) -> Tensor:
        """A black image in normalised space (``-mean / std`` per channel), shaped like ``like``."""
        spec = self.image_spec
        mean = torch.tensor(spec.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(spec.std, dtype=like.dtype, device=like.device)
        return (-mean / std).view(1, -1, 1, 1).expand_as(like).clone()

    # ----------------------------------------------------------------- input checks
    def check_tokens(self, tokens: Tensor) -> Tensor:
        """Raise unless ``tokens`` are ``(B, S)`` integer ids for this text tower; return them."""
        check_tensor("tokens", tokens, ndim=2)
        if tokens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"Expected `tokens` to be int64 token ids, but got {tokens.dtype}.")
        s = self.text_spec.context_length
        if tokens.shape[1] != s:
            raise ValueError(
                f"Expected `tokens` of shape (B, {s}) for this text tower, but got "
                f"{tuple(tokens.shape)}."
            )
        return tokens

    def as_tokens(self, texts: Tensor | Sequence[str], name: str = "texts") -> Tensor:
        """Checked ``(B, S)`` token ids from token ids or a list of captions (tokenised).

        Example:
            >>> enc = OpenCLIPDualEncoder(_tiny_clip())
            >>> enc.as_tokens(["a dog", "a cat"]).shape
            torch.Size([2, 77])
        """
        if not isinstance(texts, Tensor):
            if isinstance(texts, str) or not isinstance(texts, Sequence):
                raise TypeError(
                    f"Expected `{name}` to be token ids (B, S) or a list of strings (captions), "
                    f"but got {type(texts).__name__}."
                )
            texts = self.tokenize(list(texts))
        return self.check_tokens(texts)

    def check_pairs(self, images: Tensor, texts: Tensor | Sequence[str]) -> tuple[Tensor, Tensor]:
        """Checked ``(B, C, H, W)`` images and ``(B, S)`` token ids of B image–caption pairs
        (captions may be given as strings)."""
        images = self.check_images(images)
        tokens = self.as_tokens(texts)
        if tokens.shape[0] != images.shape[0]:
            raise ValueError(
                f"Expected `images` and `texts` with the same batch size, but got "
                f"{images.shape[0]} and {tokens.shape[0]}."
            )
        return images, tokens

    def check_images(self, images: Tensor) -> Tensor:
        """Raise unless ``images`` are ``(B, C, H, W)`` floats of the tower's input size."""
        check_tensor("images", images, ndim=4, floating=True)
        size = self.image_spec.image_size
        if tuple(images.shape[-2:]) != tuple(size):
            raise ValueError(
                f"Expected `images` of spatial size {tuple(size)} for this image tower, but got "
                f"{tuple(images.shape)}."
            )
        return images


class OpenCLIPDualEncoder(DualEncoder):
    """:class:`DualEncoder` for open_clip models (``open_clip.CLIP`` and ``CustomTextCLIP``).

    Support by component (anything else raises ``ValueError``/``TypeError`` listing this):

    * image tower ``VisionTransformer``: everything (encode, layers, token head, patch masking);
      ``ModifiedResNet`` and timm towers: ``encode_image``, ``similarity`` and input-space
      masking (:meth:`~DualEncoder.mask_image_patches`, used by FIxLIP) only — no token layers,
      so no integrated Jacobians / M2IB / ITSM on the image side;
    * text tower: CLIP's built-in text transformer and ``TextTransformer`` (``CustomTextCLIP``)
      without an appended class token: everything, including ``token_mask``; Hugging Face text
      towers: ``encode_text`` without ``token_mask`` only.

    Text tokens are masked by adding a key mask to the attention mask the text transformer
    receives (a forward pre-hook on the transformer rewrites its ``attn_mask`` argument), so the
    causal mask is kept and no forward code is copied.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP``.
        tokenizer: an open_clip ``SimpleTokenizer`` (default: one with the model's context
            length). Must expose ``sot_token_id`` and ``eot_token_id``.

    Example:
        >>> enc = OpenCLIPDualEncoder(_tiny_clip())
        >>> tokens = enc.tokenize(["a photo of a dog", "a cat"])
        >>> images = torch.randn(2, 3, 32, 32)
        >>> enc.similarity(enc.encode_image(images), enc.encode_text(tokens)).shape
        torch.Size([2])
        >>> enc.image_spec.grid_size, enc.image_spec.num_prefix_tokens
        ((4, 4), 1)
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        import open_clip
        from open_clip.transformer import TextTransformer, VisionTransformer

        if not isinstance(model, (open_clip.CLIP, open_clip.CustomTextCLIP)):
            raise TypeError(
                "Expected an open_clip model of type CLIP or CustomTextCLIP, but got "
                f"{type(model).__name__}. Other dual encoders plug in by subclassing DualEncoder."
            )
        self._model = model
        visual = model.visual
        self._vit = isinstance(visual, VisionTransformer)

        # text tower: CLIP keeps its text modules on the model; CustomTextCLIP in `model.text`.
        if isinstance(model, open_clip.CustomTextCLIP):
            text = model.text
            if isinstance(text, TextTransformer):
                if text.cls_emb is not None:
                    self._text_transformer = None
                else:
                    self._text_transformer = text.transformer
                causal = text.attn_mask is not None
                pad_id = int(text.pad_id)
                context_length = int(text.context_length)
            else:
                self._text_transformer = None
                causal = False
                pad_id = 0
                context_length = int(getattr(tokenizer, "context_length", 0) or 77)
        else:
            self._text_transformer = model.transformer
            causal = model.attn_mask is not None
            pad_id = 0
            context_length = int(model.context_length)

        if tokenizer is None:
            tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        sot = getattr(tokenizer, "sot_token_id", None)
        eot = getattr(tokenizer, "eot_token_id", None)
        if sot is None or eot is None:
            raise TypeError(
                "Expected a tokenizer with `sot_token_id` and `eot_token_id` (open_clip "
                f"SimpleTokenizer), but got {type(tokenizer).__name__}."
            )
        self._tokenizer = tokenizer
        self._text_spec = TextSpec(
            context_length=context_length,
            sot_id=int(sot),
            eot_id=int(eot),
            pad_id=pad_id,
            causal=causal,
        )

        cfg = getattr(visual, "preprocess_cfg", None) or {}
        mean = tuple(cfg.get("mean", getattr(visual, "image_mean", None) or _OPENAI_MEAN))
        std = tuple(cfg.get("std", getattr(visual, "image_std", None) or _OPENAI_STD))
        size = getattr(visual, "image_size", None) or cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if self._vit:
            patch = tuple(visual.patch_size)
            grid = tuple(visual.grid_size)
            prefix = 1
        else:
            patch = grid = None
            prefix = 0
        self._image_spec = ImageSpec(
            image_size=(int(size[0]), int(size[1])),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            patch_size=None if patch is None else (int(patch[0]), int(patch[1])),
            grid_size=None if grid is None else (int(grid[0]), int(grid[1])),
            num_prefix_tokens=prefix,
        )

    @classmethod
    def from_name(
        cls, model_name: str, pretrained: str | None = None, **kwargs: Any
    ) -> OpenCLIPDualEncoder:
        """Create an open_clip model and its tokenizer by name (downloads ``pretrained`` weights).

        ``kwargs`` go to ``open_clip.create_model``.
        """
        import open_clip

        model = open_clip.create_model(model_name, pretrained=pretrained, **kwargs)
        return cls(model, open_clip.get_tokenizer(model_name))

    # ------------------------------------------------------------------ specs
    @property
    def module(self) -> nn.Module:
        return self._model

    @property
    def image_spec(self) -> ImageSpec:
        return self._image_spec

    @property
    def text_spec(self) -> TextSpec:
        return self._text_spec

    @property
    def logit_scale(self) -> Tensor:
        return self._model.logit_scale.exp().reshape(())

    @property
    def logit_bias(self) -> Tensor | None:
        bias = getattr(self._model, "logit_bias", None)
        return None if bias is None else bias.reshape(())

    # ----------------------------------------------------------------- towers
    def encode_image(self, images: Tensor) -> Tensor:
        """Unnormalised image embeddings ``(B, K)``, equal to ``model.encode_image(images)``."""
        self.check_images(images)
        return self._model.encode_image(images)

    def encode_text(self, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """Unnormalised text embeddings ``(B, K)``, equal to ``model.encode_text(tokens)``.

        With ``token_mask`` (``(B, S)`` bool, True = keep), masked tokens are removed as keys
        from every attention layer (the causal mask is kept); SOT and EOT are always kept.
        """
        tokens = self.check_tokens(tokens)
        if token_mask is None:
            return self._model.encode_text(tokens)
        check_tensor("token_mask", token_mask, ndim=2)
        if token_mask.dtype != torch.bool:
            raise TypeError(
                f"Expected `token_mask` to be a bool tensor, but got {token_mask.dtype}."
            )
        if token_mask.shape != tokens.shape:
            raise ValueError(
                f"Expected `token_mask` of shape {tuple(tokens.shape)} like `tokens`, but got "
                f"{tuple(token_mask.shape)}."
            )
        transformer = self._require_text_transformer("token_mask")
        keep = token_mask.clone()
        keep[:, 0] = True
        keep[torch.arange(keep.shape[0], device=keep.device), self.eot_positions(tokens)] = True
        heads = _num_heads(transformer)
        batch_first = bool(getattr(transformer, "batch_first", True))

        def pre_hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            x = args[0]
            b, s = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
            base = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
            key = torch.zeros(b, s, dtype=x.dtype, device=x.device)
            key[:, : keep.shape[1]].masked_fill_(~keep.to(x.device), float("-inf"))
            add = key[:, None, :].expand(b, s, s)  # (B, Q, K)
            if base is None:
                mask = add.repeat_interleave(heads, 0)
            elif base.ndim == 2:
                mask = (base.to(x.dtype)[None] + add).repeat_interleave(heads, 0)
            else:  # (B·heads, Q, K) from TextTransformer's pad / cls mask
                mask = base.to(x.dtype) + add.repeat_interleave(heads, 0)
            kwargs = dict(kwargs)
            kwargs["attn_mask"] = mask
            return args[:1], kwargs

        handle = transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            return self._model.encode_text(tokens)
        finally:
            handle.remove()

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Tokenise captions with the model's tokenizer → ``(B, S)`` long."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(
                f"Expected `texts` to be a sequence of strings, but got {type(texts).__name__}."
            )
        return self._tokenizer(list(texts), context_length=self._text_spec.context_length)

    # ----------------------------------------------------------------- layers
    @property
    def image_layers(self) -> Sequence[nn.Module]:
        if not self._vit:
            raise ValueError(
                "Expected an open_clip VisionTransformer image tower for layer access, but got "
                f"{type(self._model.visual).__name__}. Supported: VisionTransformer (layers, "
                "token head); ModifiedResNet / timm towers support encode_image and input-space "
                "patch masking only."
            )
        return self._model.visual.transformer.resblocks

    @property
    def text_layers(self) -> Sequence[nn.Module]:
        return self._require_text_transformer("text layers").resblocks

    def image_token_head(self, tokens: Tensor) -> Tensor:
        """``ln_post`` and ``proj`` applied to every image token: ``(B, T, D) -> (B, T, K)``."""
        visual = self._model.visual
        if not self._vit or visual.attn_pool is not None or visual.proj is None:
            raise ValueError(
                "Expected a VisionTransformer image tower without attentional pooling and with a "
                f"projection for the per-token head, but got {type(visual).__name__}."
            )
        return visual.ln_post(tokens) @ visual.proj

    def text_token_head(self, tokens: Tensor) -> Tensor:
        """``ln_final`` and the text projection applied to every token: ``(B, S, D) -> (B, S, K)``."""
        self._require_text_transformer("the per-token text head")
        owner = self._model.text if hasattr(self._model, "text") else self._model
        x = owner.ln_final(tokens)
        proj = owner.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    @contextmanager
    def allow_shorter_text(self, layer: int) -> Iterator[bool]:
        """Slice the attention masks of text blocks ``layer:`` to the tokens they receive.

        A forward pre-hook on each block's attention module cuts its ``attn_mask`` (causal
        ``(S, S)`` or per-head ``(B·H, S, S)``) to the sequence length of its input; pooling at
        the EOT position and the final norm are row-wise, so the embedding is unchanged as long
        as the kept prefix contains every EOT.
        """
        self.layer("text", layer)
        blocks = list(self.text_layers)
        start = layer % len(blocks)
        batch_first = self._layers_batch_first("text")

        def pre_hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            mask = kwargs.get("attn_mask")
            if mask is None or not args:
                return None
            n = args[0].shape[1] if batch_first else args[0].shape[0]
            if mask.shape[-1] == n:
                return None
            kwargs = dict(kwargs)
            kwargs["attn_mask"] = mask[..., :n, :n]
            return args, kwargs

        handles = [
            blk.attn.register_forward_pre_hook(pre_hook, with_kwargs=True) for blk in blocks[start:]
        ]
        try:
            yield True
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def pooled_rows_only(self, tower: Tower) -> Iterator[bool]:
        """Image tower with class-token pooling: the last block computes the class token only.

        Hooks on the last block's attention (the query is cut to the class token; keys and
        values keep every token) and on its ``ln_2`` (the MLP runs on the class token); the
        block's residual additions broadcast that row, so row 0 of its output — the only one
        ``ln_post`` / ``proj`` read for ``pool_type="tok"`` — is exact. About 5x less work in
        that block for ViT-B/32. Applied for ``VisionTransformer`` towers with
        ``pool_type="tok"``, no attentional pooler and ``nn.MultiheadAttention`` blocks;
        otherwise (and for the text tower) yields False.
        """
        check_choice("tower", tower, _TOWERS)
        visual = self._model.visual
        block = visual.transformer.resblocks[-1] if self._vit else None
        if (
            tower != "image"
            or block is None
            or visual.pool_type != "tok"
            or visual.attn_pool is not None
            or not isinstance(getattr(block, "attn", None), nn.MultiheadAttention)
            or not hasattr(block, "ln_2")
            or hasattr(block, "ln_1_kv")
            or not self._layers_batch_first("image")
        ):
            yield False
            return

        def query_pre_hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if len(args) < 3 or args[0].shape[1] == 1:
                return None
            q, k, v = args[:3]
            return (q[:, :1], k, v, *args[3:]), kwargs

        def ln_2_hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
            return output[:, :1]

        handles = [
            block.attn.register_forward_pre_hook(query_pre_hook, with_kwargs=True),
            block.ln_2.register_forward_hook(ln_2_hook),
        ]
        try:
            yield True
        finally:
            for handle in handles:
                handle.remove()

    def _layers_batch_first(self, tower: Tower) -> bool:
        if tower == "image":
            return bool(getattr(self._model.visual.transformer, "batch_first", True))
        return bool(getattr(self._text_transformer, "batch_first", True))

    def _explaining_contexts(self, stack: ExitStack) -> None:
        # Gradient checkpointing re-runs blocks (and their hooks) during backward: off while
        # explaining, restored after.
        flags = [
            m
            for m in self._model.modules()
            if hasattr(m, "grad_checkpointing") and isinstance(m.grad_checkpointing, bool)
        ]
        saved = [(m, m.grad_checkpointing) for m in flags]

        def restore() -> None:
            for m, v in saved:
                m.grad_checkpointing = v

        for m in flags:
            m.grad_checkpointing = False
        stack.callback(restore)

    def _require_text_transformer(self, what: str) -> nn.Module:
        if self._text_transformer is None:
            text = getattr(self._model, "text", None)
            raise ValueError(
                f"Expected open_clip's built-in text transformer (CLIP, or CustomTextCLIP with a "
                f"TextTransformer without class token) for {what}, but got "
                f"{type(text).__name__ if text is not None else 'none'}. Hugging Face text towers "
                "support encode_text without token_mask only."
            )
        return self._text_transformer


def _num_heads(transformer: nn.Module) -> int:
    attn = transformer.resblocks[0].attn
    return int(attn.num_heads)


def _tiny_clip() -> nn.Module:
    """A tiny random open_clip CLIP for doctests (vision/text width 32, 2 layers, image 32)."""
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    )
