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

:class:`~lico_lightning.explain.OpenCLIPDualEncoder` (in
`open_clip_encoder`) implements it for open_clip models. Other dual encoders plug in by
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
from lico_lightning._validation import check_choice, check_pairable, check_tensor

__all__ = ["DualEncoder", "ImageSpec", "TextSpec"]

Tower = Literal["image", "text"]
Where = Literal["input", "output"]
_TOWERS = ("image", "text")
_WHERES = ("input", "output")


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
        self, image_embeddings: Tensor, text_embeddings: Tensor, *, all_pairs: bool = False
    ) -> Tensor:
        """Score of embedding pairs: ``scale · cos(e_a, e_b) + bias`` (or dot product).

        Args:
            image_embeddings: ``(B, K)`` (any tower; text–text pairs work the same way).
            text_embeddings: ``(B, K)``, or ``(B', K)`` when ``all_pairs``.
            all_pairs: False: row-wise scores ``(B,)``; True: all pairs ``(B, B')``.

        .. math::
            s(a, b) = \\tau \\, \\frac{g(a)^\\top h(b)}{\\lVert g(a)\\rVert \\lVert h(b)\\rVert} + \\beta
        """
        a, b = check_pairable(
            "image_embeddings",
            image_embeddings,
            "text_embeddings",
            text_embeddings,
            ndim=2,
            all_pairs=all_pairs,
        )
        if self.normalize_embeddings:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        s = a @ b.T if all_pairs else (a * b).sum(-1)
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
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
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
        :meth:`PairAttribution.span_map`. Raises ``ValueError`` if absent.

        Example:
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
            >>> enc.phrase_span("a photo of a hot dog", "hot dog")
            (5, 7)
        """
        for name, text in (("caption", caption), ("phrase", phrase)):
            if not isinstance(text, str):
                raise TypeError(f"Expected `{name}` to be a str, but got {type(text).__name__}.")
            if not text.strip():
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
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
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
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
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
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
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
            >>> from lico_lightning.testing import tiny_dual_encoder
            >>> enc = tiny_dual_encoder()
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
