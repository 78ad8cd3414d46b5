"""EXPLAIN-R concepts: vocabularies from captions, NLP back-ends, the concept surrogate.

The data pipeline built on them (embedding caches, the distillation data module) lives in
:mod:`lico_lightning.data`.

The NLP back-ends are optional (``pip install "lico-lightning[concepts]"`` for spaCy and
lemminflect); a user-given vocabulary (:meth:`ConceptVocabulary.from_words`) with the
``"words"`` tagger needs none.
"""

from lico_lightning.concepts.nlp import (
    LemminflectLexicon,
    Lexicon,
    NLTKTagger,
    SpacyTagger,
    Tagger,
    WordListLexicon,
    WordNetLexicon,
    WordTagger,
    create_lexicon,
    create_tagger,
    list_lexicons,
    list_taggers,
)
from lico_lightning.concepts.surrogate import ConceptExplanation, ConceptSurrogate
from lico_lightning.concepts.vocabulary import ConceptVocabulary, TaggedCaptions, tag_captions

__all__ = [
    "ConceptExplanation",
    "ConceptSurrogate",
    "ConceptVocabulary",
    "LemminflectLexicon",
    "Lexicon",
    "NLTKTagger",
    "SpacyTagger",
    "TaggedCaptions",
    "Tagger",
    "WordListLexicon",
    "WordNetLexicon",
    "WordTagger",
    "create_lexicon",
    "create_tagger",
    "list_lexicons",
    "list_taggers",
    "tag_captions",
]
