"""Files of ours appear whole or not at all (a writer that fails halfway, as on a full disk,
leaves no partial file under the final name, and the next write works), and unreadable files
are named in the error."""

from __future__ import annotations

import errno
import json

import pytest
import pytorch_lightning as pl
import torch

from lico_lightning._io import atomic_write, load_torch, save_torch, write_text
from lico_lightning.concepts import ConceptVocabulary
from lico_lightning.data import CaptionEmbeddings
from lico_lightning.modules import CLIPFineTuner
from lico_lightning.plugins import AtomicCheckpointIO
from lico_lightning.text import tiny_openclip_config

_real_save = torch.save


def _disk_full_save(obj, f, *args, **kwargs):
    """torch.save that writes half of the real bytes to the file, then hits a full disk."""
    import io

    buffer = io.BytesIO()
    _real_save(obj, buffer)
    data = buffer.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def _vocabulary() -> ConceptVocabulary:
    return ConceptVocabulary([("red", "ADJ"), ("circle", "NOUN")], [3, 2], 4)


def _embeddings() -> CaptionEmbeddings:
    return CaptionEmbeddings(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1, 3]))


def _module() -> CLIPFineTuner:
    torch.manual_seed(0)
    return CLIPFineTuner(model_cfg=tiny_openclip_config(context_length=16))


WRITERS = {
    "save_torch": lambda path: save_torch({"x": torch.ones(3)}, path),
    "export_open_clip": lambda path: _module().export_open_clip(path),
    "CaptionEmbeddings.save": lambda path: _embeddings().save(path),
    "AtomicCheckpointIO": lambda path: AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.ones(2)}}, path
    ),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_write_that_fails_halfway_leaves_no_partial_file(tmp_path, monkeypatch, writer) -> None:
    path = tmp_path / "run" / "file.pt"
    WRITERS[writer](path)  # a first, whole file
    good, names = path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    monkeypatch.setattr(torch, "save", _disk_full_save)
    with pytest.raises(OSError, match=r"Could not write .*file\.pt.*No space left"):
        WRITERS[writer](path)
    assert path.read_bytes() == good  # the previous file is kept whole
    assert sorted(p.name for p in path.parent.iterdir()) == names  # no temporary left
    path.unlink()
    with pytest.raises(OSError):
        WRITERS[writer](path)
    assert "file.pt" not in [p.name for p in path.parent.iterdir()]  # nothing under the name
    monkeypatch.setattr(torch, "save", _real_save)
    WRITERS[writer](path)  # the next run works
    assert load_torch(path, "a test file") is not None


def test_text_files_are_written_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / "vocabulary.json"
    _vocabulary().save(path)
    assert ConceptVocabulary.load(path).concepts == _vocabulary().concepts

    def fail_halfway(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", fail_halfway)
    with pytest.raises(OSError, match=r"other\.json"):
        _vocabulary().save(tmp_path / "other.json")
    with pytest.raises(OSError, match=r"x\.txt"):
        write_text(tmp_path / "x.txt", "hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocabulary.json"]


def test_an_exception_inside_atomic_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(KeyError), atomic_write(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise KeyError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"], ids=["empty", "truncated"])
def test_unreadable_files_are_named(tmp_path, content) -> None:
    cache = tmp_path / "cache" / "train_embeddings.pt"
    cache.parent.mkdir()
    cache.write_bytes(content)
    with pytest.raises(ValueError, match=r"train_embeddings\.pt.*Delete the cache folder"):
        CaptionEmbeddings.load(cache)
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_bytes(content)
    with pytest.raises(ValueError, match=r"vocabulary\.json"):
        ConceptVocabulary.load(vocabulary)
    with pytest.raises(ValueError, match=r"last\.ckpt.*a Lightning checkpoint"):
        (tmp_path / "last.ckpt").write_bytes(content)
        AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")


def test_foreign_files_name_the_missing_field(tmp_path) -> None:
    save_torch({"image_embeds": torch.zeros(1, 2)}, tmp_path / "e.pt")
    with pytest.raises(ValueError, match=r"caption_embeds"):
        CaptionEmbeddings.load(tmp_path / "e.pt")
    (tmp_path / "v.json").write_text(json.dumps({"format_version": 1, "concepts": []}))
    with pytest.raises(ValueError, match=r"v\.json"):
        ConceptVocabulary.load(tmp_path / "v.json")


def test_a_trainer_with_the_plugin_resumes_from_its_checkpoint(tmp_path) -> None:
    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)))
    kwargs = dict(
        plugins=[AtomicCheckpointIO()],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    pl.Trainer(max_epochs=1, **kwargs).fit(Tiny(), data)
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]
    resumed = pl.Trainer(max_epochs=2, **kwargs)
    resumed.fit(Tiny(), data, ckpt_path=ckpt)
    assert resumed.global_step == 8
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ValueError, match=ckpt.name):
        pl.Trainer(max_epochs=3, **kwargs).fit(Tiny(), data, ckpt_path=ckpt)


def test_a_shard_write_that_fails_halfway_leaves_the_whole_shards_only(tmp_path, monkeypatch):
    import webdataset
    from PIL import Image

    from lico_lightning.data import CaptionRecord, read_shard_sizes, write_shards

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    records = [CaptionRecord(str(tmp_path / "a.png"), ("one", "two", "three"))]
    out = tmp_path / "out"
    real, calls = webdataset.TarWriter.write, []

    def disk_full_on_the_third_sample(self, obj):
        calls.append(obj["__key__"])
        if len(calls) == 3:  # the first sample of the second shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, obj)

    monkeypatch.setattr(webdataset.TarWriter, "write", disk_full_on_the_third_sample)
    with pytest.raises(OSError, match="No space left"):
        write_shards(records, out / "%02d.tar", samples_per_shard=2)
    assert sorted(p.name for p in out.iterdir()) == ["00.tar"]  # whole; no temp, no 01.tar
    assert read_shard_sizes([str(out / "00.tar")]) == [2]  # counted from its headers
    monkeypatch.undo()
    write_shards(records, out / "%02d.tar", samples_per_shard=2)
    assert sorted(p.name for p in out.iterdir()) == ["00.tar", "01.tar", "sizes.json"]
