"""Concept vocabularies (EXPLAIN-R B.1) on a hand-made caption set, with and without NLP packages."""

from __future__ import annotations

import sys

import pytest
import torch

from lico_lightning.concepts import (
    ConceptVocabulary,
    WordListLexicon,
    create_tagger,
    list_taggers,
    tag_captions,
)

# 40 images; counts are image-level document frequencies (an image counts once).
CAPTIONS = (
    [["A dog is running.", "A bird sings."]]  # dog 0.5, run 0.5 (bird, sing: count 1)
    + [["A dog is running.", "Two dogs are running."]] * 2  # dog 1, run 1
    + [["A microwave."]] * 4  # microwave (n.): 4 images
    + [["He microwaves it."]] * 3  # microwave (v.): 3 images
    + [["A cat."]] * 2  # count 2 < 3
    + [["A red car."]] * 5  # 5 / 40 > 0.1
    + [["A xyzzy."]] * 3  # not a word
    + [["A dry field.", "A photo."]] * 3  # dry (a.), field (n.) kept
    + [["A photo."]] * 17  # photo: 20 / 40
)
EXPECTED = [
    (("dog", "NOUN"), 3),
    (("dry", "ADJ"), 3),
    (("field", "NOUN"), 3),
    (("microwave", "NOUN"), 4),
    (("microwave", "VERB"), 3),
    (("run", "VERB"), 3),
]


@pytest.fixture(scope="module")
def tagged():
    pytest.importorskip("spacy")
    pytest.importorskip("lemminflect")
    return tag_captions(CAPTIONS, tagger="spacy")


def test_b1_with_spacy_reproduces_the_hand_made_vocabulary(tagged) -> None:
    vocab = ConceptVocabulary.from_captions(tagged, min_count=3, max_df=0.1)
    assert list(zip(vocab.concepts, vocab.counts)) == EXPECTED
    assert vocab.num_images == 40
    assert vocab.labels() == ["dog", "dry", "field", "microwave (n.)", "microwave (v.)", "run"]
    scores = vocab.scores(tagged).to_dense()
    assert scores.shape == (40, 6)
    expected = torch.zeros(40, 6)
    expected[0, [0, 5]] = 0.5
    expected[1:3, [0, 5]] = 1.0
    expected[3:7, 3] = 1.0
    expected[7:10, 4] = 1.0
    expected[20:23, [1, 2]] = 0.5
    assert torch.equal(scores, expected)


def test_b1_filters_move_the_boundaries(tagged) -> None:
    loose = ConceptVocabulary.from_captions(tagged, min_count=2, max_df=0.125)
    kept = set(loose.concepts)
    assert {("cat", "NOUN"), ("red", "ADJ"), ("car", "NOUN")} <= kept
    assert ("photo", "NOUN") not in kept and ("xyzzy", "NOUN") not in kept
    nouns = ConceptVocabulary.from_captions(tagged, pos=("NOUN",))
    assert nouns.concepts == [("dog", "NOUN"), ("field", "NOUN"), ("microwave", "NOUN")]
    no_lexicon = ConceptVocabulary.from_captions(tagged, lexicon=None)
    assert ("xyzzy", "NOUN") in no_lexicon.concepts


def test_empty_vocabulary_says_which_filter_removed_what(tagged) -> None:
    with pytest.raises(
        ValueError,
        match=r"removed as unknown to the lexicon, .* count < min_count=5, .* document frequency > max_df=0.1",
    ):
        ConceptVocabulary.from_captions(tagged, min_count=5)


def test_user_vocabulary_needs_no_nlp_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy now fails
    monkeypatch.setitem(sys.modules, "lemminflect", None)
    vocab = ConceptVocabulary.from_words(["dog", "microwave", "photo"])
    scores = vocab.scores(CAPTIONS, tagger="words").to_dense()
    assert scores[0].tolist() == [0.5, 0.0, 0.0]
    assert scores[4].tolist() == [0.0, 1.0, 0.0]
    assert scores[8].tolist() == [0.0, 0.0, 0.0]  # "microwaves" is not the word "microwave"
    assert scores[20].tolist() == [0.0, 0.0, 0.5]
    vocab.save(tmp_path / "v.json")
    loaded = ConceptVocabulary.load(tmp_path / "v.json")
    assert loaded.concepts == vocab.concepts and loaded.labels() == ["dog", "microwave", "photo"]
    words = ConceptVocabulary.from_captions(
        CAPTIONS, tagger="words", lexicon=WordListLexicon(["dog", "dry", "photo", "a"])
    )
    assert words.concepts == [("dog", None), ("dry", None)] and words.counts == [3, 3]
    with pytest.raises(ImportError, match=r"lico-lightning\[concepts\]"):
        create_tagger("spacy")
    with pytest.raises(ImportError, match=r"lico-lightning\[concepts\]"):
        ConceptVocabulary.from_captions(CAPTIONS, tagger="words")  # default lexicon: lemminflect


def test_save_load_roundtrip_keeps_pos_and_counts(tmp_path) -> None:
    vocab = ConceptVocabulary([("microwave", "NOUN"), ("microwave", "VERB")], [4, 3], 40)
    vocab.save(tmp_path / "v.json")
    loaded = ConceptVocabulary.load(tmp_path / "v.json")
    assert loaded.concepts == vocab.concepts and loaded.counts == [4, 3] and loaded.num_images == 40
    (tmp_path / "bad.json").write_text('{"concepts": []}')
    with pytest.raises(ValueError, match="format_version"):
        ConceptVocabulary.load(tmp_path / "bad.json")


def test_bad_inputs() -> None:
    assert list_taggers() == ["nltk", "spacy", "words"]
    with pytest.raises(
        ValueError,
        match=r"Expected a tagger name, but got 'stanza'. Available: nltk, spacy, words.",
    ):
        create_tagger("stanza")
    with pytest.raises(ValueError, match="image 1 has none"):
        tag_captions([["a"], []], tagger="words")
    with pytest.raises(TypeError, match="sequence"):
        tag_captions("a dog", tagger="words")
    with pytest.raises(ValueError, match="max_df"):
        ConceptVocabulary.from_captions([["a"]], max_df=0.0, tagger="words", lexicon=None)
    with pytest.raises(ValueError, match="distinct"):
        ConceptVocabulary.from_words(["dog", "Dog"])
    with pytest.raises(ValueError, match="POS tags"):
        ConceptVocabulary([("dog", "NOUN")]).scores([["a dog"]], tagger="words")


def test_nltk_back_end_without_its_data_never_downloads() -> None:
    try:
        import nltk  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="nltk"):
            create_tagger("nltk")
        return
    try:
        tagger = create_tagger("nltk")
    except ImportError as err:  # data missing: the message says how to install it
        assert "never downloads" in str(err)
        return
    tokens = tagger.tag(["Two dogs are running."])[0]
    assert ("dog", "NOUN") in tokens and ("run", "VERB") in tokens
