"""The one interface every frozen text encoder implements (`TextEncoder`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_tensor

__all__ = ["TextEncoder", "TokenizedText"]


class TokenizedText(NamedTuple):
    """Token ids of whole sentences, as returned by :meth:`TextEncoder.tokenize`.

    Attributes:
        ids: ``(S, L)`` long, ``[BOS] words [EOT] [PAD]...``.
        attention_mask: ``(S, L)`` bool, True on ``[BOS] .. [EOT]``.
        eot_index: ``(S,)`` long, position of ``[EOT]`` in each row.
    """

    ids: Tensor
    attention_mask: Tensor
    eot_index: Tensor


class TextEncoder(nn.Module, ABC):
    """A frozen text encoder that takes token *embeddings* and returns per-token features.

    Subclasses load a pretrained text tower, set the attributes below and call
    :meth:`freeze` at the end of ``__init__``. After that, every parameter has
    ``requires_grad=False`` and the module stays in eval mode even when a parent calls
    ``.train()`` (dropout off, no statistics updates). Gradients still flow *through* the
    encoder to its input embeddings, which is how learnable prompts are trained.

    Keeping it out of the optimizer: build the optimizer from
    ``[p for p in module.parameters() if p.requires_grad]`` (or leave out
    ``text_encoder.parameters()``); the encoder's weights are never updated.

    The three steps a prompt learner needs:

    * :meth:`token_ids` — the tokenizer's ids of a text, without special tokens
      (:attr:`bos_id`, :attr:`eot_id`, :attr:`pad_id` are known separately), and
      :meth:`tokenize` for whole sentences;
    * :meth:`embed_tokens` — ids ``(S, L)`` → input embeddings ``(S, L, W)``;
    * :meth:`forward` — input embeddings ``(S, L, W)`` (+ attention mask) → per-token output
      features ``(S, L, K)``. Positional (and token-type) embeddings are added inside.

    Attributes:
        width: W, the width of the input token embeddings.
        output_dim: K, the width of the per-token output features.
        context_length: the longest sequence the encoder accepts.
        bos_id: id of the start token (``<start_of_text>`` / ``[CLS]``).
        eot_id: id of the end token (``<end_of_text>`` / ``[SEP]``).
        pad_id: id used to pad rows to a common length.
        causal: True when token ``s`` only attends to tokens ``<= s`` (CLIP); then positions
            after ``[EOT]`` never change the features up to ``[EOT]``.
    """

    width: int
    output_dim: int
    context_length: int
    bos_id: int
    eot_id: int
    pad_id: int
    causal: bool
    supports_shared_prefix: bool = False

    @abstractmethod
    def token_ids(self, text: str) -> list[int]:
        """Ids of ``text`` by the encoder's tokenizer, without special tokens."""

    @abstractmethod
    def embed_tokens(self, ids: Tensor) -> Tensor:
        """Input token embeddings: ``(S, L)`` long → ``(S, L, W)``."""

    @abstractmethod
    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Per-token features: ``(S, L, W)`` embeddings (+ ``(S, L)`` mask) → ``(S, L, K)``."""

    def forward_shared_prefix(
        self, prefix_embeds: Tensor, suffix_embeds: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Features of S sequences that all start with the same P token embeddings.

        For a causal encoder the features of a shared prefix do not depend on what follows,
        so they can be computed once and the S suffixes attend to the prefix's cached
        keys/values. The result equals (up to float rounding)

        .. code-block:: python

            full = self(torch.cat([prefix_embeds.expand(S, -1, -1), suffix_embeds], 1))
            full[0, :P], full[:, P:]

        Encoders that can do this set :attr:`supports_shared_prefix`; the default raises.

        Args:
            prefix_embeds: ``(P, W)`` input embeddings of the shared prefix.
            suffix_embeds: ``(S, L, W)`` input embeddings of the S suffixes.

        Returns:
            ``(P, K)`` prefix features and ``(S, L, K)`` suffix features.

        Raises:
            NotImplementedError: the encoder has no shared-prefix path.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no shared-prefix path (supports_shared_prefix=False); "
            f"call forward() on the full sequences."
        )

    # ------------------------------------------------------------------ shared behaviour
    def freeze(self) -> TextEncoder:
        """Set ``requires_grad=False`` on every parameter and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> TextEncoder:
        """Stay in eval mode whatever ``mode`` is: the encoder is frozen."""
        return super().train(False)

    def tokenize(self, texts: Sequence[str], context_length: int | None = None) -> TokenizedText:
        """Tokenize whole sentences as ``[BOS] words [EOT]``, padded with :attr:`pad_id`.

        Args:
            texts: S strings.
            context_length: pad every row to this length; ``None`` pads to the longest row
                (the cheapest length that gives the same features, see :meth:`forward`).

        Returns:
            :class:`TokenizedText` with ``ids`` ``(S, L)``, ``attention_mask`` ``(S, L)`` and
            ``eot_index`` ``(S,)``, on the encoder's device.

        Raises:
            ValueError: a text does not fit in the context length (no silent truncation).
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"Expected `texts` to be a list of strings, but got {texts!r}.")
        if len(texts) == 0:
            raise ValueError("Expected `texts` to be non-empty, but got an empty list.")
        rows = [[self.bos_id, *self.token_ids(t), self.eot_id] for t in texts]
        longest = max(len(r) for r in rows)
        limit = self.context_length if context_length is None else context_length
        if longest > limit:
            raise ValueError(
                f"Expected every text to fit in {limit} tokens (with start/end tokens), but "
                f"got one of {longest} tokens."
            )
        length = longest if context_length is None else context_length
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = True
        eot = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        device = self._device()
        return TokenizedText(ids.to(device), mask.to(device), eot.to(device))

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for b in self.buffers():  # pragma: no cover - every encoder has parameters
            return b.device
        return torch.device("cpu")  # pragma: no cover

    def _check_forward_inputs(
        self, inputs_embeds: Tensor, attention_mask: Tensor | None
    ) -> tuple[int, int]:
        check_tensor("inputs_embeds", inputs_embeds, ndim=3, floating=True)
        n, length, width = inputs_embeds.shape
        if width != self.width:
            raise ValueError(
                f"Expected `inputs_embeds` of width {self.width} (the encoder's token embedding "
                f"width), but got shape {tuple(inputs_embeds.shape)}."
            )
        if length > self.context_length:
            raise ValueError(
                f"Expected at most {self.context_length} tokens (the encoder's context length), "
                f"but got {length}."
            )
        if attention_mask is not None:
            check_tensor("attention_mask", attention_mask, ndim=2)
            if tuple(attention_mask.shape) != (n, length):
                raise ValueError(
                    f"Expected `attention_mask` of shape {(n, length)}, but got "
                    f"{tuple(attention_mask.shape)}."
                )
        return n, length
