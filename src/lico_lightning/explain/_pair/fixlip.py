r"""FIxLIP: faithful interaction explanations of dual encoders with weighted Banzhaf interactions.

For one image–caption pair the players are the image patches (a cell of the patch grid is
removed by setting its pixels to 0 in normalised space, i.e. the mean colour) and the caption
tokens between SOT and EOT (removed from attention, or replaced by a token id; SOT and EOT are
always kept). The game is the model's score

.. math::
    \nu(M) = \tau \cos\bigl(f_I(x_I \oplus_{M \cap N_I} 0),\; f_T(x_T \oplus_{M \cap N_T} b_T)\bigr)
        + \beta

(logit scale :math:`\tau`, bias :math:`\beta` for SigLIP-like models), and the explanation is the
2-additive game closest to :math:`\nu` in p-faithfulness (see
:mod:`lico_lightning.functional.banzhaf`). Image players come first in the joint order
(:math:`N_I = \{0..P-1\}`, :math:`N_T = \{P..P+n_T-1\}`), as in the paper.

The cross-modal estimator encodes each sampled masked image once and each masked caption once
(duplicates once) and gets all ``m_I × m_T`` values with one matrix product of the embeddings.

References:
    H. Baniecki et al., *Explaining Similarity in Vision–Language Encoders with Weighted
    Banzhaf Interactions*, §3 and Appendix B.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lico_lightning._validation import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_int_pair,
    check_positive,
    check_probability,
    check_tensor,
)
from lico_lightning.explain._pair.base import (
    PairAttribution,
    PairExplainer,
    box_cells,
    check_token_spans,
    register_pair_explainer,
)
from lico_lightning.explain._pair.dual_encoder import DualEncoder
from lico_lightning.explain._pair.open_clip_encoder import as_dual_encoder
from lico_lightning.functional.banzhaf import (
    BanzhafInteractions,
    approximate_game_values,
    cross_modal_banzhaf_interactions,
    greedy_subsets,
    model_agnostic_banzhaf_interactions,
)

__all__ = ["FIxLIP", "FIxLIPAttribution", "FIxLIPGame"]

Estimator = Literal["cross_modal", "model_agnostic", "exact"]
TextMasking = Literal["attention", "replace"]
Interactions = Literal["all", "cross", "none"]
_ESTIMATORS = ("cross_modal", "model_agnostic", "exact")
_TEXT_MASKING = ("attention", "replace")
_INTERACTIONS = ("all", "cross", "none")
#: Largest number of players (image + text) explained with ``estimator="exact"``.
MAX_EXACT_PLAYERS = 14


@contextmanager
def _safe(encoder: DualEncoder) -> Iterator[None]:
    """No autograd graph, eval mode while explaining, every module's mode restored after."""
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(encoder.explaining())
        yield


class FIxLIPGame:
    """The FIxLIP game :math:`\\nu(M)` of one image–caption pair (Definition 3).

    Args:
        encoder: the dual encoder.
        image: ``(C, H, W)`` normalised image.
        tokens: ``(S,)`` token ids of the caption.
        grid: ``(Hp, Wp)`` grid of image players (default: the tower's patch grid; required for
            towers without patches, e.g. ResNets). Any grid that divides the image size works,
            e.g. a coarser one for fewer players.
        text_masking: ``"attention"`` removes absent tokens from attention (reference
            implementation); ``"replace"`` replaces them by ``replacement_token_id``.
        replacement_token_id: id used with ``"replace"`` (default: the padding id).
        chunk_size: masked inputs encoded per forward pass.
        progress: show a tqdm bar over chunks.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> game = FIxLIPGame(enc, torch.randn(3, 32, 32), enc.tokenize(["a red dog"])[0])
        >>> game.n_image, game.n_text
        (16, 3)
        >>> game.cross_values(torch.ones(2, 16, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        image: Tensor,
        tokens: Tensor,
        *,
        grid: tuple[int, int] | None = None,
        text_masking: TextMasking = "attention",
        replacement_token_id: int | None = None,
        chunk_size: int = 64,
        progress: bool = False,
    ) -> None:
        encoder = as_dual_encoder(encoder)
        check_tensor("image", image, ndim=3, floating=True)
        check_finite("image", image)
        check_tensor("tokens", tokens, ndim=1)
        check_choice("text_masking", text_masking, _TEXT_MASKING)
        check_int("chunk_size", chunk_size, 1)
        self.encoder = encoder
        self.image = encoder.check_images(image[None])[0]
        self.tokens = encoder.check_tokens(tokens[None])[0]
        self.grid_size = _resolve_grid(encoder, grid, (image.shape[-2], image.shape[-1]))
        eot = int(encoder.eot_positions(self.tokens[None])[0])
        if eot < 2:
            raise ValueError(
                "Expected a caption with at least one token between SOT and EOT, but got none."
            )
        #: ``(n_T,)`` positions of the text players in the tokenised caption (1 .. EOT-1).
        self.token_positions = torch.arange(1, eot, device=self.tokens.device)
        self.text_masking = text_masking
        if replacement_token_id is None:
            replacement_token_id = encoder.text_spec.pad_id
        check_int("replacement_token_id", replacement_token_id, 0)
        self.replacement_token_id = replacement_token_id
        self.chunk_size = chunk_size
        self.progress = check_bool("progress", progress)

    @property
    def n_image(self) -> int:
        """Image players ``Hp·Wp``."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def n_text(self) -> int:
        """Text players (tokens between SOT and EOT)."""
        return int(self.token_positions.shape[0])

    @property
    def n_players(self) -> int:
        return self.n_image + self.n_text

    # ----------------------------------------------------------------- towers
    def image_embeddings(self, masks: Tensor) -> Tensor:
        """Embeddings ``(m, K)`` of the image with players ``masks`` ``(m, n_I)`` present.

        Identical masks are encoded once.
        """
        masks = self._masks("masks", masks, self.n_image)
        uniq, inv = torch.unique(masks, dim=0, return_inverse=True)
        hp, wp = self.grid_size
        out = []
        with _safe(self.encoder):
            for keep in self._chunks(uniq, "image"):
                imgs = self.image[None].expand(keep.shape[0], *self.image.shape)
                masked = self.encoder.mask_image_patches(imgs, keep.view(-1, hp, wp), fill=0.0)
                out.append(self.encoder.encode_image(masked))
        return torch.cat(out)[inv]

    def text_embeddings(self, masks: Tensor) -> Tensor:
        """Embeddings ``(m, K)`` of the caption with players ``masks`` ``(m, n_T)`` present."""
        masks = self._masks("masks", masks, self.n_text)
        uniq, inv = torch.unique(masks, dim=0, return_inverse=True)
        pos = self.token_positions
        out = []
        with _safe(self.encoder):
            for keep in self._chunks(uniq, "text"):
                tokens = self.tokens[None].expand(keep.shape[0], -1)
                if self.text_masking == "attention":
                    token_mask = torch.ones_like(tokens, dtype=torch.bool)
                    token_mask[:, pos] = keep
                    out.append(self.encoder.encode_text(tokens, token_mask))
                else:
                    tokens = tokens.clone()
                    tokens[:, pos] = torch.where(
                        keep,
                        tokens[:, pos],
                        torch.full_like(tokens[:, pos], self.replacement_token_id),
                    )
                    out.append(self.encoder.encode_text(tokens))
        return torch.cat(out)[inv]

    # ----------------------------------------------------------------- values
    def cross_values(self, masks_image: Tensor, masks_text: Tensor) -> Tensor:
        """:math:`\\nu(M_I^{(a)} \\cup M_T^{(b)})` for all combinations → ``(m_I, m_T)``.

        ``m_I`` image and ``m_T`` text forward passes (fewer with duplicates) and one matrix
        product of the normalised embeddings.
        """
        e_i = self.image_embeddings(masks_image)
        e_t = self.text_embeddings(masks_text)
        with torch.no_grad():
            return self.encoder.similarity(e_i, e_t, all_pairs=True)

    def __call__(self, masks: Tensor) -> Tensor:
        """:math:`\\nu(M)` for joint coalitions ``masks`` ``(m, n_I + n_T)`` → ``(m,)``."""
        masks = self._masks("masks", masks, self.n_players)
        e_i = self.image_embeddings(masks[:, : self.n_image])
        e_t = self.text_embeddings(masks[:, self.n_image :])
        with torch.no_grad():
            return self.encoder.similarity(e_i, e_t)

    # ----------------------------------------------------------------- helpers
    def _masks(self, name: str, masks: Tensor, n: int) -> Tensor:
        check_tensor(name, masks, ndim=2)
        if masks.dtype != torch.bool:
            raise TypeError(f"Expected `{name}` to be a bool tensor, but got {masks.dtype}.")
        if masks.shape[1] != n:
            raise ValueError(f"Expected `{name}` of shape (m, {n}), but got {tuple(masks.shape)}.")
        return masks.to(self.image.device)

    def _chunks(self, masks: Tensor, what: str) -> Iterator[Tensor]:
        starts = range(0, masks.shape[0], self.chunk_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"FIxLIP {what} forwards", leave=False)
        for s in starts:
            yield masks[s : s + self.chunk_size]


@dataclass
class FIxLIPAttribution(PairAttribution):
    """FIxLIP explanations of B image–caption pairs (players: patches and caption tokens).

    Common views (:class:`~lico_lightning.explain.PairAttribution`), on the grid of image
    players ``(Hp, Wp)`` (the patch grid, or the explainer's ``grid``):

    * :meth:`span_map` — the token × patch interactions :math:`e_{ij}` of the span's tokens,
      summed over the span (the paper's pointing game for a phrase);
    * :meth:`image_map` — each patch's weighted Banzhaf value (Theorem 1, all its pairs
      included): its attribution in the whole pair;
    * :meth:`box_scores` — each token's interactions with the patches in the box;
      :meth:`token_scores` — each token's weighted Banzhaf value. Both ``(B, S)`` at caption
      positions, zero at SOT, EOT and padding (they are not players).

    Captions have different numbers of text players; text dimensions are padded to
    ``T = max n_T`` with zeros (:attr:`text_valid` marks real players). Image players are the
    ``P = Hp·Wp`` grid cells in row-major order. Values are float64 (the precision of the
    least-squares fit) in the units of the model's score (logit scale · cosine + bias).
    :meth:`to_context` gives the ``(B, S, Hp, Wp)`` token × patch layout indexed by caption
    position; :meth:`joint` the full explanation of one pair over its ``P + n_T`` players.

    Attributes:
        constant: ``(B,)`` :math:`e_0`.
        image_first_order: ``(B, P)`` :math:`e_i` of the patches.
        text_first_order: ``(B, T)`` :math:`e_i` of the tokens.
        cross: ``(B, T, P)`` token × patch interactions :math:`e_{ij}`.
        image_pairs: ``(B, P, P)`` patch × patch interactions (symmetric, zero diagonal), or
            ``None`` when within-modality pairs were not fitted.
        text_pairs: ``(B, T, T)`` token × token interactions, or ``None``.
        score: ``(B,)`` :math:`\\nu(N)`, the model's score of the full pair.
        empty_score: ``(B,)`` :math:`\\nu(\\emptyset)`, the score with every player removed.
        token_positions: ``(B, T)`` long, position of each text player in the tokenised caption
            (``-1`` for padding).
        image_clique: ``(B, P)`` bool, patches whose pairs were fitted (two-step filtering).
        text_clique: ``(B, T)`` bool, tokens whose pairs were fitted.
        grid_size: ``(Hp, Wp)``.
        p: the p of FIxLIP-p.
        estimator: ``"cross_modal"``, ``"model_agnostic"`` or ``"exact"``.
        image_size: ``(H, W)`` of the explained images.
        context_length: S of the tokenised captions.
    """

    constant: Tensor
    image_first_order: Tensor
    text_first_order: Tensor
    cross: Tensor
    image_pairs: Tensor | None
    text_pairs: Tensor | None
    score: Tensor
    empty_score: Tensor
    token_positions: Tensor
    image_clique: Tensor
    text_clique: Tensor
    grid_size: tuple[int, int]
    p: float
    estimator: str
    image_size: tuple[int, int] | None = None
    context_length: int | None = None

    method = "fixlip"
    views = frozenset({"span_map", "image_map", "box_scores", "token_scores"})

    # ------------------------------------------------------------ common views
    def span_map(self, span: tuple[int, int] | Tensor) -> Tensor:
        """``(B, Hp, Wp)`` summed token × patch interactions of the caption tokens ``span``."""
        eot = self.num_text_players + 1  # players are the positions 1 .. eot - 1
        spans = check_token_spans(span, eot.to(self.cross.device))
        pos = self.token_positions
        inside = (pos >= spans[:, :1]) & (pos < spans[:, 1:])
        out = torch.einsum("bt,btp->bp", inside.to(self.cross.dtype), self.cross)
        return out.reshape(-1, *self.grid_size)

    def image_map(self) -> Tensor:
        """``(B, Hp, Wp)`` weighted Banzhaf value of every patch (:meth:`banzhaf_values`)."""
        return self.banzhaf_values()[0].reshape(-1, *self.grid_size)

    def box_scores(self, boxes: Tensor) -> Tensor:
        """``(B, S)`` summed interactions of every caption token with the patches in ``boxes``."""
        size = self.image_size if self.image_size is not None else self.grid_size
        cells = box_cells(boxes, self.cross.shape[0], self.grid_size, size)
        cells = cells.flatten(1).to(self.cross)
        return self._at_positions(torch.einsum("btp,bp->bt", self.cross, cells))

    def token_scores(self) -> Tensor:
        """``(B, S)`` weighted Banzhaf value of every caption token."""
        return self._at_positions(self.banzhaf_values()[1])

    def _at_positions(self, values: Tensor, context_length: int | None = None) -> Tensor:
        """``(B, T, ...)`` player values placed at their caption positions → ``(B, S, ...)``."""
        s = self.context_length if context_length is None else context_length
        if s is None:
            raise ValueError(
                "Expected `context_length` (set by FIxLIP.attribute), but got None; pass it."
            )
        check_int("context_length", s, 1)
        if bool((self.token_positions >= s).any()):
            raise ValueError(
                f"Expected `context_length` > {int(self.token_positions.max())} (the last text "
                f"player), but got {s}."
            )
        b, rest = values.shape[0], values.shape[2:]
        out = values.new_zeros(b, s + 1, *rest)
        idx = torch.where(self.text_valid, self.token_positions, s)
        idx = idx.reshape(*idx.shape, *([1] * len(rest))).expand_as(values)
        out.scatter_(1, idx, values)
        return out[:, :s]

    @property
    def text_valid(self) -> Tensor:
        """``(B, T)`` bool, True for real text players."""
        return self.token_positions >= 0

    @property
    def num_text_players(self) -> Tensor:
        """``(B,)`` long, :math:`n_T` of every caption."""
        return self.text_valid.sum(-1)

    def cross_grid(self) -> Tensor:
        """Token × patch interactions on the grid, ``(B, T, Hp, Wp)``."""
        return self.cross.reshape(*self.cross.shape[:2], *self.grid_size)

    def to_context(self, context_length: int) -> Tensor:
        """Token × patch interactions at caption positions, ``(B, S, Hp, Wp)``.

        Rows of SOT, EOT and padding are zero. This is the layout of token × patch
        interaction maps indexed by the tokenised caption (easy to wrap as a generic
        interaction-attribution object).
        """
        check_int("context_length", context_length, 1)
        out = self._at_positions(self.cross, context_length)
        return out.reshape(self.cross.shape[0], context_length, *self.grid_size)

    def banzhaf_values(self) -> tuple[Tensor, Tensor]:
        """Theorem 1: weighted Banzhaf values :math:`e_i + p \\sum_j e_{ij}`.

        Returns:
            ``(B, P)`` patch and ``(B, T)`` token values (zero at text padding).
        """
        img = self.image_first_order + self.p * self.cross.sum(1)
        txt = self.text_first_order + self.p * self.cross.sum(2)
        if self.image_pairs is not None:
            img = img + self.p * self.image_pairs.sum(-1)
        if self.text_pairs is not None:
            txt = txt + self.p * self.text_pairs.sum(-1)
        return img, txt * self.text_valid

    def joint(self, index: int) -> BanzhafInteractions:
        """The explanation of pair ``index`` over its ``n = P + n_T`` players (image first)."""
        b = self.constant.shape[0]
        check_int("index", index, -b)
        if index >= b:
            raise ValueError(f"Expected `index` in [{-b}, {b}), but got {index!r}.")
        p_img = self.image_first_order.shape[1]
        n_t = int(self.num_text_players[index])
        n = p_img + n_t
        second = self.cross.new_zeros(n, n)
        cross = self.cross[index, :n_t]  # (n_T, P)
        second[p_img:, :p_img] = cross
        second[:p_img, p_img:] = cross.T
        if self.image_pairs is not None:
            second[:p_img, :p_img] = self.image_pairs[index]
        if self.text_pairs is not None:
            second[p_img:, p_img:] = self.text_pairs[index, :n_t, :n_t]
        first = torch.cat([self.image_first_order[index], self.text_first_order[index, :n_t]])
        clique = torch.cat([self.image_clique[index], self.text_clique[index, :n_t]])
        return BanzhafInteractions(self.constant[index], first, second, clique)

    def approximate(self, index: int, masks: Tensor) -> Tensor:
        """:math:`\\hat\\nu_e(M)` of pair ``index`` for joint coalitions ``masks`` ``(m, n)``."""
        e = self.joint(index)
        return approximate_game_values(masks, e.constant, e.first_order, e.second_order)


@register_pair_explainer("fixlip")
class FIxLIP(PairExplainer):
    """Faithful interaction explanations of a dual encoder's score (FIxLIP-p).

    Args:
        encoder: the dual encoder (e.g. :class:`~lico_lightning.explain.OpenCLIPDualEncoder`).
        p: probability that a player is present in the weighting of coalitions, in (0, 1);
            ``p > 0.5`` favours coalitions with many players (closer to the data).
        budget: number of joint coalitions. ``"cross_modal"``: :math:`m \\approx m_I m_T`
            values from :math:`m_I + m_T` forwards (paper: :math:`2^{21}`); ``"model_agnostic"``:
            ``budget`` values from ``budget`` image and text forwards.
        estimator: ``"cross_modal"`` (Definition 7), ``"model_agnostic"`` (Definition 6) or
            ``"exact"`` (all :math:`2^n` coalitions, ``n <= 14``).
        interactions: ``"all"`` pairs, only ``"cross"``-modal pairs (as in the paper's pointing
            game) or ``"none"`` (weighted Banzhaf values only).
        clique_size: two-step filtering (§3.3) when there are more players than this: a
            first-order fit on the same samples picks the clique whose pairs are fitted
            (paper: 72). ``None`` fits every pair.
        budget_split: explicit ``(m_I, m_T)`` for the cross-modal estimator.
        text_masking: ``"attention"`` or ``"replace"`` (see :class:`FIxLIPGame`).
        replacement_token_id: id for ``"replace"`` (default: the padding id).
        grid: grid of image players (default: the patch grid).
        chunk_size: masked inputs per forward pass.
        ridge: ridge term of the least squares (0 = exact WLS; see
            :func:`~lico_lightning.functional.banzhaf.solve_interactions`).
        seed: seed of the coalition sampler; every pair is explained with a fresh generator
            seeded with it, so an explanation does not depend on the rest of the batch.
        progress: tqdm bars over pairs and forward chunks.

    The model is put in eval mode during an explanation and every module's mode is restored;
    everything runs under ``torch.no_grad`` (also fine inside ``torch.inference_mode``), so
    parameters and their ``.grad`` are untouched. The global RNG is not used.

    Example:
        >>> from lico_lightning.testing import tiny_dual_encoder
        >>> enc = tiny_dual_encoder()
        >>> fixlip = FIxLIP(enc, p=0.5, estimator="exact", grid=(2, 2))
        >>> att = fixlip.attribute(torch.randn(1, 3, 32, 32), ["a red dog"])
        >>> att.cross.shape, att.image_pairs.shape, att.text_first_order.shape
        (torch.Size([1, 3, 4]), torch.Size([1, 4, 4]), torch.Size([1, 3]))
    """

    def __init__(
        self,
        encoder: DualEncoder | nn.Module,
        *,
        p: float = 0.5,
        budget: int = 2**21,
        estimator: Estimator = "cross_modal",
        interactions: Interactions = "all",
        clique_size: int | None = 72,
        budget_split: tuple[int, int] | None = None,
        text_masking: TextMasking = "attention",
        replacement_token_id: int | None = None,
        grid: tuple[int, int] | None = None,
        chunk_size: int = 64,
        ridge: float = 0.0,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        super().__init__(encoder)
        check_probability("p", p)
        check_int("budget", budget, 4)
        check_choice("estimator", estimator, _ESTIMATORS)
        check_choice("interactions", interactions, _INTERACTIONS)
        check_choice("text_masking", text_masking, _TEXT_MASKING)
        if clique_size is not None:
            check_int("clique_size", clique_size, 2)
        if budget_split is not None:
            if len(budget_split) != 2:
                raise ValueError(f"Expected `budget_split` = (m_I, m_T), but got {budget_split!r}.")
            for v in budget_split:
                check_int("budget_split", v, 1)
            budget_split = (int(budget_split[0]), int(budget_split[1]))
        check_int("chunk_size", chunk_size, 1)
        check_positive("ridge", ridge, strict=False)
        check_int("seed", seed, 0)
        if grid is not None:
            check_int_pair("grid", grid, "(Hp, Wp)")
        self.p = float(p)
        self.budget = budget
        self.estimator = estimator
        self.interactions = interactions
        self.clique_size = clique_size
        self.budget_split = budget_split
        self.text_masking = text_masking
        self.replacement_token_id = replacement_token_id
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self.chunk_size = chunk_size
        self.ridge = float(ridge)
        self.seed = seed
        self.progress = check_bool("progress", progress)

    def game(self, image: Tensor, tokens: Tensor) -> FIxLIPGame:
        """The game of one pair (``(C, H, W)`` image, ``(S,)`` tokens) with this explainer's masking."""
        return FIxLIPGame(
            self.encoder,
            image,
            tokens,
            grid=self.grid,
            text_masking=self.text_masking,
            replacement_token_id=self.replacement_token_id,
            chunk_size=self.chunk_size,
            progress=self.progress,
        )

    def attribute(
        self,
        images: Tensor,
        texts: Tensor | Sequence[str],
        *,
        generator: torch.Generator | None = None,
    ) -> FIxLIPAttribution:
        """Explain the scores of the pairs ``(images[b], texts[b])``.

        Args:
            images: ``(B, C, H, W)`` normalised images.
            texts: ``(B, S)`` token ids or B captions.
            generator: CPU generator used for all pairs in turn (default: a fresh one seeded
                with ``seed`` per pair).

        Returns:
            :class:`FIxLIPAttribution`.
        """
        images, tokens = self._inputs(images, texts)
        games = [self.game(images[b], tokens[b]) for b in range(images.shape[0])]
        if self.estimator == "exact":
            too_big = [g.n_players for g in games if g.n_players > MAX_EXACT_PLAYERS]
            if too_big:
                raise ValueError(
                    f"Expected at most {MAX_EXACT_PLAYERS} players for estimator='exact', but got "
                    f"{max(too_big)}. Use a coarser `grid`, a shorter caption, or an estimator."
                )
        results = []
        pairs = range(len(games))
        if self.progress:
            from tqdm.auto import tqdm

            pairs = tqdm(pairs, desc="FIxLIP pairs")
        for b in pairs:
            gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
            results.append(self._explain(games[b], gen))
        return self._pack(games, results)

    def insertion_deletion(
        self,
        images: Tensor,
        texts: Tensor | Sequence[str],
        attribution: FIxLIPAttribution,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Game values along the greedy subsets of Definition 9 (inputs to AID).

        For every pair, :func:`~lico_lightning.functional.banzhaf.greedy_subsets` finds
        :math:`M_{e,\\max,k}` and :math:`M_{e,\\min,k}` for ``k = 0..n`` and the model evaluates
        them.

        Returns:
            Two lists of B tensors ``(n_b + 1,)``: :math:`\\nu(M_{e,\\max,k})` and
            :math:`\\nu(M_{e,\\min,k})` (entry ``k`` has ``k`` players present; feed them to
            :func:`~lico_lightning.functional.area_between_insertion_deletion`).
        """
        images, tokens = self._inputs(images, texts)
        self._check_attribution(attribution, images.shape[0])
        max_curves, min_curves = [], []
        for b in range(images.shape[0]):
            game = self.game(images[b], tokens[b])
            e = attribution.joint(b)
            if e.first_order.shape[0] != game.n_players:
                raise ValueError(
                    f"Expected `attribution` of pair {b} to have {game.n_players} players, but it "
                    f"has {e.first_order.shape[0]} (explained with another caption or grid?)."
                )
            m_max, _ = greedy_subsets(e.first_order, e.second_order, e.constant, maximize=True)
            m_min, _ = greedy_subsets(e.first_order, e.second_order, e.constant, maximize=False)
            v = game(torch.cat([m_max, m_min]))
            max_curves.append(v[: m_max.shape[0]])
            min_curves.append(v[m_max.shape[0] :])
        return max_curves, min_curves

    def faithfulness_samples(
        self,
        images: Tensor,
        texts: Tensor | Sequence[str],
        attribution: FIxLIPAttribution,
        *,
        p: float | None = None,
        num_masks: int = 1000,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Game values and their approximations on coalitions from :math:`\\mathbb{P}_p` (Definition 8).

        Args:
            p: the evaluation distribution's p (default: the explainer's).
            num_masks: ``m`` coalitions per pair (paper: 1000).
            generator: CPU generator (default: seeded with ``seed + 1``).

        Returns:
            ``(B, m)`` :math:`\\nu(M)` and ``(B, m)`` :math:`\\hat\\nu_e(M)` (feed them to
            :func:`~lico_lightning.functional.spearman_correlation`).
        """
        images, tokens = self._inputs(images, texts)
        self._check_attribution(attribution, images.shape[0])
        p = self.p if p is None else p
        check_probability("p", p)
        check_int("num_masks", num_masks, 2)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed + 1)
        nus, approx = [], []
        for b in range(images.shape[0]):
            game = self.game(images[b], tokens[b])
            masks = torch.rand(num_masks, game.n_players, generator=gen) < p
            nus.append(game(masks))
            approx.append(attribution.approximate(b, masks.to(attribution.cross.device)))
        return torch.stack(nus), torch.stack(approx).to(nus[0].dtype)

    # ------------------------------------------------------------------ internals
    def _inputs(self, images: Tensor, texts: Tensor | Sequence[str]) -> tuple[Tensor, Tensor]:
        images, tokens = self._check_pairs(images, texts)
        return images.detach(), tokens.to(images.device)

    @staticmethod
    def _check_attribution(attribution: FIxLIPAttribution, batch: int) -> None:
        if not isinstance(attribution, FIxLIPAttribution):
            raise TypeError(f"Expected a FIxLIPAttribution, but got {type(attribution).__name__}.")
        if attribution.constant.shape[0] != batch:
            raise ValueError(
                f"Expected an attribution of {batch} pairs, but got {attribution.constant.shape[0]}."
            )

    def _explain(
        self, game: FIxLIPGame, gen: torch.Generator
    ) -> tuple[BanzhafInteractions, Tensor]:
        n_i, n_t = game.n_image, game.n_text
        if self.estimator == "model_agnostic":
            e = model_agnostic_banzhaf_interactions(
                game,
                n_i,
                n_t,
                budget=self.budget,
                chunk_size=max(self.chunk_size, 1024),
                p=self.p,
                interactions=self.interactions,
                clique_size=self.clique_size,
                ridge=self.ridge,
                generator=gen,
            )
        else:
            split = (2**n_i, 2**n_t) if self.estimator == "exact" else self.budget_split
            e = cross_modal_banzhaf_interactions(
                game.cross_values,
                n_i,
                n_t,
                budget=self.budget,
                budget_split=split,
                p=self.p,
                interactions=self.interactions,
                clique_size=self.clique_size,
                ridge=self.ridge,
                generator=gen,
            )
        full_empty = game.cross_values(
            torch.stack([torch.ones(n_i, dtype=torch.bool), torch.zeros(n_i, dtype=torch.bool)]),
            torch.stack([torch.ones(n_t, dtype=torch.bool), torch.zeros(n_t, dtype=torch.bool)]),
        )
        return e, full_empty.diagonal()

    def _pack(
        self, games: list[FIxLIPGame], results: list[tuple[BanzhafInteractions, Tensor]]
    ) -> FIxLIPAttribution:
        b = len(games)
        n_i = games[0].n_image
        t = max(g.n_text for g in games)
        e0 = results[0][0].constant
        dtype, device = e0.dtype, e0.device
        constant = torch.stack([e.constant for e, _ in results])
        img1 = torch.stack([e.first_order[:n_i] for e, _ in results])
        txt1 = torch.zeros(b, t, dtype=dtype, device=device)
        cross = torch.zeros(b, t, n_i, dtype=dtype, device=device)
        within = self.interactions == "all"
        img2 = torch.stack([e.second_order[:n_i, :n_i] for e, _ in results]) if within else None
        txt2 = torch.zeros(b, t, t, dtype=dtype, device=device) if within else None
        positions = torch.full((b, t), -1, dtype=torch.long, device=e0.device)
        img_clique = torch.stack([e.clique[:n_i] for e, _ in results])
        txt_clique = torch.zeros(b, t, dtype=torch.bool, device=e0.device)
        for k, (g, (e, _)) in enumerate(zip(games, results)):
            nt = g.n_text
            txt1[k, :nt] = e.first_order[n_i:]
            cross[k, :nt] = e.second_order[n_i:, :n_i]
            if txt2 is not None:
                txt2[k, :nt, :nt] = e.second_order[n_i:, n_i:]
            positions[k, :nt] = g.token_positions.to(positions.device)
            txt_clique[k, :nt] = e.clique[n_i:]
        scores = torch.stack([s for _, s in results]).to(e0.device, torch.float64)
        return FIxLIPAttribution(
            constant=constant,
            image_first_order=img1,
            text_first_order=txt1,
            cross=cross,
            image_pairs=img2,
            text_pairs=txt2,
            score=scores[:, 0],
            empty_score=scores[:, 1],
            token_positions=positions,
            image_clique=img_clique,
            text_clique=txt_clique,
            grid_size=games[0].grid_size,
            p=self.p,
            estimator=self.estimator,
            image_size=(int(games[0].image.shape[-2]), int(games[0].image.shape[-1])),
            context_length=int(games[0].tokens.shape[0]),
        )


def _resolve_grid(
    encoder: DualEncoder, grid: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[int, int]:
    if grid is None:
        grid = encoder.image_spec.grid_size
        if grid is None:
            raise ValueError(
                "Expected `grid` (Hp, Wp) for an image tower without a patch grid (e.g. ResNet), "
                "but got None."
            )
    check_int_pair("grid", grid, "(Hp, Wp)")
    if size[0] % grid[0] or size[1] % grid[1]:
        raise ValueError(
            f"Expected a `grid` that divides the image size {size}, but got {tuple(grid)}."
        )
    return int(grid[0]), int(grid[1])
