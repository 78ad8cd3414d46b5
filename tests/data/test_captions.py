"""Caption data: generated shape scenes, COCO / Flickr30k Entities / CSV-JSONL from tiny files."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lico_lightning.data import (
    CaptionFileDataModule,
    COCOCaptionDataModule,
    Flickr30kEntitiesDataModule,
    ShapesCaptionDataModule,
    read_caption_file,
)
from lico_lightning.data._shapes import SHAPE_COLOURS, _mask
from lico_lightning.text import tiny_openclip_config

CFG = tiny_openclip_config(context_length=16)  # 32x32 images, openai mean/std, BPE tokenizer
BIG = {**CFG, "vision_cfg": {**CFG["vision_cfg"], "image_size": 64}}


def _shapes(**kwargs) -> ShapesCaptionDataModule:
    kw = {"model_cfg": BIG, "num_train": 1000, "num_val": 20, "num_test": 20, **kwargs}
    dm = ShapesCaptionDataModule(**kw)
    dm.setup()
    return dm


def test_shapes_deterministic_varied_and_split_apart() -> None:
    a, b = _shapes(), _shapes()
    train = a.train_dataset
    assert [train.captions(i) for i in range(50)] == [
        b.train_dataset.captions(i) for i in range(50)
    ]
    torch.testing.assert_close(train[7][0], b.train_dataset[7][0])
    captions = [train.captions(i)[0] for i in range(1000)]
    assert len(set(captions)) >= 980  # compositions rarely repeat within 1000 scenes
    other = _shapes(seed=1).train_dataset
    assert [other.captions(i) for i in range(20)] != [train.captions(i) for i in range(20)]
    # every caption is one sample; its index is the image's
    assert len(train) == 2000 and train.image_of_pair[:4].tolist() == [0, 0, 1, 1]


def test_shapes_boxes_are_exact_and_relations_true() -> None:
    ds = _shapes(num_train=1).val_dataset
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    for pair, phrase in ds.probe_candidates():
        probe = ds.probe(pair, phrase)
        image = ds.render(probe.index)
        size, colour, shape = probe.phrase.split()
        rgb = torch.tensor(SHAPE_COLOURS[colour]).view(3, 1, 1)
        layout = next(s for s in ds.layouts[probe.index] if (s.colour, s.shape) == (colour, shape))
        assert layout.size == size
        mask = _mask(layout, ds.image_size)
        assert (image == rgb).all(0)[mask].all()  # the object is drawn where its mask is
        rows, cols = torch.nonzero(mask, as_tuple=True)
        x0, y0, x1, y1 = probe.box.tolist()
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert probe.distractor_box is not None and not torch.equal(probe.box, probe.distractor_box)
        # token span: the tokens at the span decode to the phrase
        tokens = ds.tokenize([probe.caption])[0]
        start, end = probe.token_span
        assert tokenizer.decode(tokens[start:end].tolist()).strip() == probe.phrase
        assert probe.caption[slice(*probe.char_span)] == probe.phrase
        torch.testing.assert_close(probe.image, ds.load_image(probe.index))
    for i in range(ds.num_images):  # the relation of the first caption holds for the boxes
        first, second = ds.layouts[i][0], ds.layouts[i][1]
        caption = ds.captions(i)[0]
        if " left of " in caption:
            assert first.cx < second.cx
        elif " right of " in caption:
            assert first.cx > second.cx
        elif " above " in caption:
            assert first.cy < second.cy
        else:
            assert " below " in caption and first.cy > second.cy


def test_shapes_probes_one_per_image() -> None:
    dataset = _shapes(num_train=1).val_dataset
    probes = dataset.draw_probes(8, torch.Generator().manual_seed(3))
    assert len(probes) == 8 and len({p.index for p in probes}) == 8
    # reference: the candidates in torch.randperm order, the first usable phrase of each image
    candidates = dataset.probe_candidates()
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(3))
    expected: dict[int, tuple[int, int]] = {}
    for pair, phrase in (candidates[int(k)] for k in order):
        expected.setdefault(dataset.pairs[pair][0], (pair, phrase))
    keys = list(expected.values())[:8]  # every shapes box survives the preprocessing
    assert dataset.draw_probe_indices(8, torch.Generator().manual_seed(3)) == keys
    assert [(p.caption, p.phrase) for p in probes] == [
        (dataset.probe(*k).caption, dataset.probe(*k).phrase) for k in keys
    ]
    assert torch.equal(probes[0].image, dataset.probe(*keys[0]).image)
    assert probes[0].image.shape == (3, 64, 64)
    fresh = ShapesCaptionDataModule(model_cfg=BIG, num_train=1, num_val=20, num_test=2)
    again = fresh.probes(8, seed=3)  # sets up the split on demand, same draw
    assert [(p.index, p.phrase) for p in again] == [(p.index, p.phrase) for p in probes]
    with pytest.raises(ValueError, match="split"):
        fresh.probes(2, split="dev")


def test_caption_longer_than_context_names_it() -> None:
    short = {**CFG, "text_cfg": {**CFG["text_cfg"], "context_length": 8}}
    dm = ShapesCaptionDataModule(model_cfg=short, num_train=2, num_val=2, num_test=2)
    with pytest.raises(ValueError, match=r"context length 8.*image 0 caption 0 'a "):
        dm.setup("fit")


def _png(path, w: int, h: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_csv_and_jsonl_through_open_clip_preprocessing(tmp_path) -> None:
    _png(tmp_path / "wide.png", 80, 40)
    _png(tmp_path / "tall.png", 30, 60, seed=1)
    (tmp_path / "train.csv").write_text(
        "image,caption,phrase,box\n"
        "wide.png,a dog left of a tree,tree,30 5 50 35\n"
        "wide.png,a tree and a dog,,\n"
        'tall.png,a tall red door,red door,"2, 10, 28, 58"\n'
    )
    rows = [
        {
            "image": "wide.png",
            "caption": "a dog left of a tree",
            "phrase": "dog",
            "box": [0, 0, 20, 40],
        },
        {"image": "tall.png", "caption": "a tall red door"},
    ]
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    dm = CaptionFileDataModule(
        str(tmp_path / "train.csv"),
        str(tmp_path / "val.jsonl"),
        model_cfg=CFG,
        batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    assert dm.train_dataset.num_images == 2 and len(dm.train_dataset) == 3
    images, tokens, index = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32) and tokens.shape == (2, 16) and index.tolist() == [0, 1]
    transform = open_clip.image_transform(32, is_train=False)  # open_clip's own, openai mean/std
    with Image.open(tmp_path / "wide.png") as img:
        torch.testing.assert_close(images[0], transform(img.convert("RGB")))
    # 80x40 -> shortest side 32: 64x32, centre crop drops 16 px left: x' = 0.8 x - 16
    probe = dm.train_dataset.probe(0, 0)
    assert probe.phrase == "tree" and probe.box.tolist() == pytest.approx([8.0, 4.0, 24.0, 28.0])
    tall = dm.train_dataset.probe(2, 0)  # 30x60 -> 32x64, crop 16 px top: y' = 32/30 y - 16
    assert tall.box.tolist() == pytest.approx([2 * 32 / 30, 0.0, 28 * 32 / 30, 32.0], abs=1e-5)


def test_box_cropped_away_is_skipped(tmp_path) -> None:
    _png(tmp_path / "wide.png", 80, 40)
    (tmp_path / "t.csv").write_text("image,caption,phrase,box\nwide.png,a dog,dog,0 0 10 40\n")
    dm = CaptionFileDataModule(
        str(tmp_path / "t.csv"), str(tmp_path / "t.csv"), model_cfg=CFG, num_workers=0
    )
    dm.setup("validate")
    with pytest.raises(ValueError, match="cropped away"):
        dm.val_dataset.probe(0, 0)  # x' = 0.8 x - 16 < 0 for the whole box


def test_caption_file_errors(tmp_path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("image,caption,phrase,box\na.png,a dog,cat,0 0 1 1\n")
    with pytest.raises(
        ValueError, match=r"'cat' of line 2 of .*bad\.csv to occur in its caption 'a dog'"
    ):
        read_caption_file(f)
    f.write_text("image,caption,phrase,box\na.png,a dog,dog,0 0 1\n")
    with pytest.raises(ValueError, match="4 numbers"):
        read_caption_file(f)
    f.write_text("image,caption,phrase,box\na.png,a dog,dog,5 0 1 1\n")
    dm = CaptionFileDataModule(str(f), str(f), model_cfg=CFG, num_workers=0)
    with pytest.raises(ValueError, match=r"line 2 of .*bad\.csv as finite .* x1 > x0"):
        dm.setup("validate")
    f.write_text("image,caption\na.png,\n")
    with pytest.raises(ValueError, match=r"non-empty 'caption' in line 2 of .*bad\.csv"):
        read_caption_file(f)
    with pytest.raises(FileNotFoundError, match="caption file"):
        read_caption_file(tmp_path / "missing.csv")


def make_tiny_coco(root) -> None:
    """A 2-image COCO tree (val files reused as train) under ``root``."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    _png(root / "val2017" / "1.jpg", 64, 48)
    _png(root / "val2017" / "2.jpg", 48, 48, seed=2)
    images = [
        {"id": 1, "file_name": "1.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "2.jpg", "width": 48, "height": 48},
    ]
    caps = [
        (1, "A dog sits next to a cat."),
        (1, "Two cats and one dog."),
        (1, "A pet on the floor."),
        (2, "An empty street."),
    ]
    (root / "annotations" / "captions_val2017.json").write_text(
        json.dumps(
            {"images": images, "annotations": [{"image_id": i, "caption": c} for i, c in caps]}
        )
    )
    inst = {
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"image_id": 1, "category_id": 18, "bbox": [8, 8, 16, 16], "iscrowd": 0},
            {"image_id": 1, "category_id": 18, "bbox": [30, 8, 4, 4], "iscrowd": 0},
            {"image_id": 1, "category_id": 17, "bbox": [36, 20, 20, 20], "iscrowd": 0},
            {"image_id": 1, "category_id": 17, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(inst))
    # the train split reuses the val files in this tiny fixture
    (root / "train2017").symlink_to(root / "val2017")
    (root / "annotations" / "captions_train2017.json").write_text(
        (root / "annotations" / "captions_val2017.json").read_text()
    )


def test_coco_captions_and_instance_probes(tmp_path) -> None:
    make_tiny_coco(tmp_path)
    dm = COCOCaptionDataModule(str(tmp_path), model_cfg=CFG, batch_size=8, num_workers=0)
    dm.setup("fit")
    val = dm.val_dataset
    assert val.num_images == 2 and len(val) == 4 and val.captions(0)[1] == "Two cats and one dog."
    first = val.records[0].phrases
    assert [p.phrase for p in first[0]] == ["dog", "cat"]  # in caption order
    assert first[0][0].box == (8.0, 8.0, 24.0, 24.0)  # largest dog; the crowd box is ignored
    assert first[0][0].distractor_box == (36.0, 20.0, 56.0, 40.0)
    assert [p.phrase for p in first[1]] == ["cats", "dog"] and first[2] == ()
    probe = val.probe(0, 0)  # 64x48 -> 42x32 (long side floored), crop 5 px left
    s = 42 / 64
    assert probe.box.tolist() == pytest.approx(
        [8 * s - 5, 8 * 32 / 48, 24 * s - 5, 24 * 32 / 48], abs=1e-4
    )
    assert probe.token_span == (2, 3)
    images, _, index = next(iter(dm.val_dataloader()))
    assert index.tolist() == [0, 0, 0, 1] and images.shape == (4, 3, 32, 32)


def make_tiny_flickr30k_entities(root) -> None:
    """One image with two annotated sentences, listed in every split."""
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "flickr30k-images").mkdir()
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("100\n")
    _png(root / "flickr30k-images" / "100.jpg", 40, 40)
    (root / "Sentences" / "100.txt").write_text(
        "[/EN#1/people A man] in [/EN#2/clothing a red hat] walks past [/EN#3/other a wall] .\n"
        "[/EN#1/people Someone] walks .\n"
    )
    (root / "Annotations" / "100.xml").write_text(
        "<annotation><size><width>40</width><height>40</height><depth>3</depth></size>"
        "<object><name>1</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>30</ymax></bndbox></object>"
        "<object><name>1</name><bndbox><xmin>10</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
        "<object><name>2</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>9</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>3</name><nobndbox>1</nobndbox></object></annotation>"
    )


def test_flickr30k_entities(tmp_path) -> None:
    make_tiny_flickr30k_entities(tmp_path)
    dm = Flickr30kEntitiesDataModule(str(tmp_path), model_cfg=CFG, num_workers=0)
    dm.setup("fit")
    rec = dm.val_dataset.records[0]
    assert rec.captions[0] == "A man in a red hat walks past a wall ."
    man, hat = rec.phrases[0]  # "a wall" has no box
    assert (man.phrase, man.char_span, man.box) == ("A man", (0, 5), (2.0, 1.0, 20.0, 30.0))
    assert hat.phrase == "a red hat" and hat.distractor_box == man.box
    assert rec.phrases[1][0].phrase == "Someone"
    assert dm.val_dataset.probe(0, 1).token_span == (4, 7)


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="open_clip model"):
        ShapesCaptionDataModule(model_name="ViT-Nope")


@pytest.mark.timeout(300)  # a hang guard, not a timing target
@pytest.mark.parametrize("max_objects, image_size", [(10, 64), (8, 32), (40, 32)])
def test_shapes_that_cannot_fit_fail_with_the_size_that_fits(max_objects, image_size):
    """It tried forever before (max_objects=10 at 64 px, 8 at 32 px hung in the placement loop)."""
    cfg = tiny_openclip_config(context_length=16)
    cfg["vision_cfg"]["image_size"] = image_size
    dm = ShapesCaptionDataModule(model_cfg=cfg, num_train=200, max_objects=max_objects)
    with pytest.raises(ValueError, match=rf"in a {image_size}x{image_size} image.*about \d+ fit"):
        dm.setup("fit")


def test_more_objects_than_shape_kinds_is_rejected_up_front():
    with pytest.raises(ValueError, match=r"max_objects.*<= 40.*got 41"):
        ShapesCaptionDataModule(max_objects=41)
