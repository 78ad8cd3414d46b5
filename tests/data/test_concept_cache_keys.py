"""EXPLAIN-R's cache is keyed by a fingerprint of the teacher and the data; a vocabulary that
matches no caption is an error (issue 18 point 10)."""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.data.test_concept_distillation import CTX, data

from lico_lightning.concepts import ConceptVocabulary
from lico_lightning.data import encode_caption_dataset
from lico_lightning.explain import as_dual_encoder
from lico_lightning.testing import tiny_clip


def _setup(dm) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    return [str(w.message) for w in caught]


def test_a_cache_of_another_teacher_is_rebuilt(tmp_path) -> None:
    first = as_dual_encoder(tiny_clip(seed=3, layers=1, context_length=CTX))
    second = as_dual_encoder(tiny_clip(seed=4, layers=1, context_length=CTX))
    cache = tmp_path / "cache"
    dm = data(cache_dir=str(cache), teacher=first)
    assert not any("rebuilding" in m for m in _setup(dm))
    # the same teacher and data: read back, no rebuild
    again = data(cache_dir=str(cache), teacher=first)
    assert not any("rebuilding" in m for m in _setup(again))
    torch.testing.assert_close(
        again.val_data.embeddings.image_embeds, dm.val_data.embeddings.image_embeds
    )
    # another teacher (a changed clip_checkpoint): rebuilt, with a warning naming the file
    changed = data(cache_dir=str(cache), teacher=second)
    messages = _setup(changed)
    assert any("val_embeddings.pt was built from another teacher" in m for m in messages)
    expected = encode_caption_dataset(second, changed.captions.val_dataset, 5)
    torch.testing.assert_close(changed.val_data.embeddings.image_embeds, expected.image_embeds)
    assert not torch.allclose(expected.image_embeds, dm.val_data.embeddings.image_embeds)
    # and the rebuilt files now carry the second teacher's key
    last = data(cache_dir=str(cache), teacher=second)
    assert not any("rebuilding" in m for m in _setup(last))


def test_a_vocabulary_without_any_caption_word_is_an_error(tmp_path) -> None:
    path = tmp_path / "vocabulary.json"
    ConceptVocabulary.from_words(["zebra", "giraffe"]).save(path)
    teacher = as_dual_encoder(tiny_clip(seed=3, layers=1, context_length=CTX))
    dm = data(vocabulary=str(path), teacher=teacher)
    with pytest.raises(ValueError, match=r"Expected concepts of .*vocabulary\.json to occur in"):
        dm.setup("fit")
