"""EXPLAIN-R concepts: vocabularies from captions, NLP back-ends, the concept surrogate.

The NLP back-ends are optional (``pip install "lico-lightning[concepts]"`` for spaCy and
lemminflect); a user-given vocabulary (:meth:`ConceptVocabulary.from_words`) with the
``"words"`` tagger needs none.
"""

from lico_lightning.concepts.cache import (
    CaptionEmbeddings,
    ConceptImageDataset,
    ConceptPairDataset,
    EpochKeySampler,
    encode_caption_dataset,
    random_crop_flip,
)
from lico_lightning.concepts.datamodule import (
    ConceptDistillationDataModule,
)
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
    "CaptionEmbeddings",
    "ConceptDistillationDataModule",
    "ConceptExplanation",
    "ConceptImageDataset",
    "ConceptPairDataset",
    "ConceptSurrogate",
    "ConceptVocabulary",
    "EpochKeySampler",
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
    "encode_caption_dataset",
    "list_lexicons",
    "list_taggers",
    "random_crop_flip",
    "tag_captions",
]
