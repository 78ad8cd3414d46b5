"""Concept vocabularies from captions (EXPLAIN-R appendix B.1) and concept score matrices.

A concept is a ``(lemma, POS)`` pair — "microwave (n.)" and "microwave (v.)" are two concepts —
or a plain word (POS ``None``) in a word-only vocabulary. Building one from captions:

1. tag every caption (lemma + universal POS), keep the tokens whose POS is in ``pos``;
2. keep the candidates the lexicon knows for that POS (WordNet in the paper);
3. count each candidate's *image-level* document frequency (number of images with at least
   one caption mentioning it) and keep ``count >= min_count`` and ``count / N <= max_df``.

An image's score for a concept is the share of its captions that mention it
(:meth:`ConceptVocabulary.scores`, a sparse ``(N, |C|)`` matrix).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lico_lightning._io import write_text
from lico_lightning._validation import check_int
from lico_lightning.concepts.nlp import (
    Lexicon,
    Tagger,
    Token,
    WordListLexicon,
    create_lexicon,
    create_tagger,
)

__all__ = ["ConceptVocabulary", "TaggedCaptions", "tag_captions"]

_POS_SHORT = {"NOUN": "n.", "VERB": "v.", "ADJ": "a.", "ADV": "adv.", "PROPN": "pn."}
_FORMAT_VERSION = 1
_AUTO_PROGRESS = 5000  # captions


@dataclass(frozen=True)
class TaggedCaptions:
    """Tagged captions: for each image, for each caption, the set of its ``(lemma, POS)``.

    Tag once with :func:`tag_captions` and pass the result to both
    :meth:`ConceptVocabulary.from_captions` and :meth:`ConceptVocabulary.scores`.
    """

    images: tuple[tuple[frozenset[Token], ...], ...]
    has_pos: bool

    def __len__(self) -> int:
        return len(self.images)


def _check_captions(captions_per_image: object) -> list[list[str]]:
    if isinstance(captions_per_image, str) or not isinstance(captions_per_image, Sequence):
        raise TypeError(
            "Expected `captions_per_image` to be a sequence (one entry per image) of caption "
            f"lists, but got {type(captions_per_image).__name__}."
        )
    out = []
    for i, caps in enumerate(captions_per_image):
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, Sequence) or not all(isinstance(c, str) for c in caps):
            raise TypeError(
                f"Expected the captions of image {i} to be a list of str, but got {caps!r}."
            )
        if len(caps) == 0:
            raise ValueError(f"Expected at least one caption per image, but image {i} has none.")
        out.append(list(caps))
    if not out:
        raise ValueError("Expected at least one image's captions, but got none.")
    return out


def _as_tagger(tagger: str | Tagger) -> Tagger:
    if isinstance(tagger, Tagger):
        return tagger
    if isinstance(tagger, str):
        return create_tagger(tagger)
    raise TypeError(f"Expected `tagger` to be a tagger name or a Tagger, but got {tagger!r}.")


def tag_captions(
    captions_per_image: Sequence[Sequence[str]],
    tagger: str | Tagger = "spacy",
    *,
    batch_size: int = 1024,
    progress: bool | None = None,
) -> TaggedCaptions:
    """Tag every caption of every image once.

    Args:
        captions_per_image: N entries, each the list of that image's captions (a single str
            counts as one caption).
        tagger: back-end name (``"spacy"``, ``"nltk"``, ``"words"``) or a :class:`Tagger`.
        batch_size: captions per tagger call.
        progress: tqdm bar; ``None`` shows it for more than 5000 captions.

    Example:
        >>> tagged = tag_captions([["A dog.", "Dogs!"], ["a cat"]], tagger="words")
        >>> sorted(tagged.images[0][1]), len(tagged)
        ([('dogs', None)], 2)
    """
    captions = _check_captions(captions_per_image)
    tagger = _as_tagger(tagger)
    check_int("batch_size", batch_size, 1)
    flat = [c for caps in captions for c in caps]
    show = len(flat) > _AUTO_PROGRESS if progress is None else progress
    tokens: list[list[Token]] = []
    for start in tqdm(range(0, len(flat), batch_size), desc="tagging captions", disable=not show):
        tokens.extend(tagger.tag(flat[start : start + batch_size]))
    images, pos = [], 0
    for caps in captions:
        images.append(tuple(frozenset(t) for t in tokens[pos : pos + len(caps)]))
        pos += len(caps)
    return TaggedCaptions(tuple(images), tagger.has_pos)


def _as_tagged(captions: Sequence[Sequence[str]] | TaggedCaptions, tagger: str | Tagger,
               progress: bool | None) -> TaggedCaptions:  # fmt: skip
    if isinstance(captions, TaggedCaptions):
        return captions
    return tag_captions(captions, tagger, progress=progress)


def _is_word(lemma: str) -> bool:
    return lemma.replace("-", "").replace("'", "").isalpha()


class ConceptVocabulary:
    """An ordered list of concepts ``(lemma, POS)`` (POS ``None`` for plain words).

    Build it with :meth:`from_captions` (appendix B.1) or :meth:`from_words` (a user's list,
    no NLP package needed), score images with :meth:`scores`, keep it with :meth:`save` /
    :meth:`load` (JSON).

    Args:
        concepts: the concepts, in column order of the score matrices.
        counts: optional image-level document frequency of each concept (from captions).
        num_images: N of the corpus the counts come from.

    Example:
        >>> vocab = ConceptVocabulary.from_words(["dog", "grass", "cat"])
        >>> vocab.scores([["a dog on grass", "a dog"], ["a cat"]], tagger="words").to_dense()
        tensor([[1.0000, 0.5000, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """

    def __init__(
        self,
        concepts: Sequence[tuple[str, str | None]],
        counts: Sequence[int] | None = None,
        num_images: int | None = None,
    ) -> None:
        items = []
        for c in concepts:
            if (
                not isinstance(c, (tuple, list))
                or len(c) != 2
                or not isinstance(c[0], str)
                or not (c[1] is None or isinstance(c[1], str))
            ):
                raise TypeError(f"Expected a concept (lemma, POS or None), but got {c!r}.")
            items.append((c[0], c[1]))
        if not items:
            raise ValueError("Expected at least one concept, but got an empty vocabulary.")
        if len(set(items)) != len(items):
            dup = next(c for c, n in Counter(items).items() if n > 1)
            raise ValueError(f"Expected distinct concepts, but got {dup!r} more than once.")
        if counts is not None and len(counts) != len(items):
            raise ValueError(
                f"Expected one count per concept ({len(items)}), but got {len(counts)}."
            )
        self.concepts: list[tuple[str, str | None]] = items
        self.counts: list[int] | None = None if counts is None else [int(n) for n in counts]
        self.num_images = num_images
        self._index = {c: i for i, c in enumerate(items)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_words(cls, words: Sequence[str | tuple[str, str]]) -> ConceptVocabulary:
        """A user-given vocabulary: plain words (POS ``None``) and/or ``(lemma, POS)`` pairs."""
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise TypeError(f"Expected a list of words, but got {type(words).__name__}.")
        return cls([(w.lower(), None) if isinstance(w, str) else tuple(w) for w in words])  # type: ignore[misc]

    @classmethod
    def from_captions(
        cls,
        captions_per_image: Sequence[Sequence[str]] | TaggedCaptions,
        min_count: int = 3,
        max_df: float = 0.1,
        pos: Sequence[str] = ("NOUN", "VERB", "ADJ"),
        tagger: str | Tagger = "spacy",
        lexicon: str | Lexicon | Sequence[str] | None = "lemminflect",
        progress: bool | None = None,
    ) -> ConceptVocabulary:
        """EXPLAIN-R's concept identification (appendix B.1).

        Args:
            captions_per_image: N caption lists, or :class:`TaggedCaptions`.
            min_count: keep concepts mentioned by at least this many images.
            max_df: keep concepts mentioned by at most this share of the images.
            pos: universal POS tags to keep (ignored by a tagger without POS).
            tagger: back-end name or :class:`Tagger` (see :func:`list_taggers`).
            lexicon: ``"lemminflect"``, ``"wordnet"``, a :class:`Lexicon`, a word list, or
                ``None`` to keep every candidate.
            progress: tqdm bar while tagging (``None``: for more than 5000 captions).

        Raises:
            ValueError: every candidate was filtered out (the message says how many each
                filter removed), or a bad ``min_count`` / ``max_df``.
        """
        check_int("min_count", min_count, 1)
        if isinstance(max_df, bool) or not isinstance(max_df, (int, float)) or not 0 < max_df <= 1:
            raise ValueError(f"Expected `max_df` in (0, 1], but got {max_df!r}.")
        if isinstance(pos, str):
            pos = (pos,)
        if isinstance(lexicon, str):
            lexicon = create_lexicon(lexicon)
        elif lexicon is not None and not isinstance(lexicon, Lexicon):
            lexicon = WordListLexicon(lexicon)
        tagged = _as_tagged(captions_per_image, tagger, progress)
        n = len(tagged)
        df: Counter[tuple[str, str | None]] = Counter()
        for caps in tagged.images:
            seen = {
                t
                for tokens in caps
                for t in tokens
                if _is_word(t[0]) and (not tagged.has_pos or t[1] in pos)
            }
            df.update(seen)
        candidates = sorted(df)
        known = [c for c in candidates if lexicon is None or c in lexicon]
        frequent = [c for c in known if df[c] >= min_count]
        kept = [c for c in frequent if df[c] / n <= max_df]
        if not kept:
            raise ValueError(
                "Expected a non-empty vocabulary after filtering, but got none: "
                f"{len(candidates)} (lemma, POS) candidates in {n} images; "
                f"{len(candidates) - len(known)} removed as unknown to the lexicon, "
                f"{len(known) - len(frequent)} with count < min_count={min_count}, "
                f"{len(frequent)} with document frequency > max_df={max_df} "
                f"(max_df·N = {max_df * n:g} images)."
            )
        return cls(kept, [df[c] for c in kept], n)

    # ------------------------------------------------------------------ use
    def __len__(self) -> int:
        return len(self.concepts)

    def __repr__(self) -> str:
        head = ", ".join(self.labels()[:5])
        return f"ConceptVocabulary({len(self)} concepts: {head}{', ...' if len(self) > 5 else ''})"

    def index(self, concept: tuple[str, str | None]) -> int:
        """Column of ``concept``."""
        if concept not in self._index:
            raise ValueError(f"Expected a concept of the vocabulary, but got {concept!r}.")
        return self._index[concept]

    def labels(self, *, always_pos: bool = False) -> list[str]:
        """Readable names: ``"crane"``, and ``"microwave (n.)"`` / ``"microwave (v.)"`` where a
        lemma occurs with several POS (or always, with ``always_pos=True``)."""
        per_lemma = Counter(lemma for lemma, _ in self.concepts)
        out = []
        for lemma, pos in self.concepts:
            if pos is not None and (always_pos or per_lemma[lemma] > 1):
                out.append(f"{lemma} ({_POS_SHORT.get(pos, pos.lower() + '.')})")
            else:
                out.append(lemma)
        return out

    def scores(
        self,
        captions_per_image: Sequence[Sequence[str]] | TaggedCaptions,
        tagger: str | Tagger = "spacy",
        progress: bool | None = None,
    ) -> Tensor:
        """Sparse ``(N, |C|)`` float32 matrix: share of each image's captions mentioning each
        concept (a word-only concept matches its word with any POS).

        Raises:
            ValueError: the vocabulary has POS-tagged concepts but the tagger gives no POS.
        """
        tagged = _as_tagged(captions_per_image, tagger, progress)
        if not tagged.has_pos and any(pos is not None for _, pos in self.concepts):
            raise ValueError(
                "Expected a tagger with POS tags for a vocabulary of (lemma, POS) concepts, but "
                "got one without (use the 'spacy' or 'nltk' tagger, or a word-only vocabulary)."
            )
        words = {lemma: i for i, (lemma, pos) in enumerate(self.concepts) if pos is None}
        rows, cols, vals = [], [], []
        for r, caps in enumerate(tagged.images):
            hits: Counter[int] = Counter()
            for tokens in caps:
                found = {self._index[t] for t in tokens if t in self._index}
                found |= {words[lemma] for lemma, _ in tokens if lemma in words}
                hits.update(found)
            for col, k in sorted(hits.items()):
                rows.append(r)
                cols.append(col)
                vals.append(k / len(caps))
        indices = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
        values = torch.tensor(vals, dtype=torch.float32)
        return torch.sparse_coo_tensor(
            indices, values, (len(tagged), len(self)), check_invariants=True
        ).coalesce()

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-able content (see :meth:`save`)."""
        return {
            "format_version": _FORMAT_VERSION,
            "concepts": [list(c) for c in self.concepts],
            "counts": self.counts,
            "num_images": self.num_images,
        }

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        write_text(path, json.dumps(self.to_dict(), indent=1))  # whole or not at all

    @classmethod
    def load(cls, path: str | Path) -> ConceptVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            ValueError: not a vocabulary file of a known format version.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(
                f"Expected a concept vocabulary JSON at {path}, but it could not be read ({err})."
            ) from None
        if not isinstance(data, dict) or data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"Expected a concept vocabulary JSON (format_version {_FORMAT_VERSION}), but got "
                f"{str(data)[:80]!r} in {path}."
            )
        missing = [k for k in ("concepts", "counts", "num_images") if k not in data]
        if missing:
            raise ValueError(
                f"Expected the fields 'concepts', 'counts' and 'num_images' in the concept "
                f"vocabulary {path}, but {missing} are missing."
            )
        return cls([tuple(c) for c in data["concepts"]], data["counts"], data["num_images"])
