"""Caption files with faults: every broken input names the file, the line/row or field and what
was expected; nothing is dropped or counted twice without a word."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from lico_lightning.data import (
    CaptionFileDataModule,
    COCOCaptionDataModule,
    read_caption_file,
    read_coco_captions,
    read_flickr30k_entities,
)
from lico_lightning.text import tiny_openclip_config


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _val_dataset(captions):
    """The validation dataset of a tiny-CLIP caption data module reading ``captions``."""
    dm = CaptionFileDataModule(
        str(captions),
        str(captions),
        model_cfg=tiny_openclip_config(context_length=16),
        num_workers=0,
    )
    dm.setup("validate")
    return dm.val_dataset


@pytest.mark.parametrize(
    "name, text, pattern",
    [
        (
            "c.jsonl",
            '{"image": "a.png", "caption": "a dog"}\n\n{"image": "b.png", "caption"\n',
            r"line 3 of .*c\.jsonl.*not JSON",
        ),
        ("c.jsonl", '["a.png", "a dog"]\n', r"JSON object .*line 1 of .*c\.jsonl.*got a list"),
        (
            "c.csv",
            "image,caption,phrase,box\na.png,a dog,dog,[1 2\n",
            r"box of line 2 of .*c\.csv as 4 numbers",
        ),
        (
            "c.csv",
            "image,caption,phrase,box\na.png,a dog,dog,0 0 inf inf\n",
            r"box of line 2 of .*c\.csv as finite",
        ),
        ("c.csv", "image,caption,phrase,box\na.png,a dog,dog,5 5 2 2\n", r"x1 > x0"),
        ("c.csv", "image,caption\n", r"at least one caption row in .*c\.csv"),
        ("c.jsonl", "\n\n", r"at least one caption row in .*c\.jsonl"),
        ("c.csv", "image,caption\na.png,\n", r"non-empty 'caption' in line 2 of .*c\.csv"),
    ],
)
def test_broken_caption_files_name_file_and_line(tmp_path, name, text, pattern):
    with pytest.raises(ValueError, match=pattern):
        read_caption_file(_write(tmp_path, name, text))


def test_a_json_array_is_read_as_records(tmp_path):
    rows = [{"image": "a.png", "caption": "a dog"}, {"image": "a.png", "caption": "a cat"}]
    (rec,) = read_caption_file(_write(tmp_path, "c.json", json.dumps(rows, indent=1)))
    assert rec.captions == ("a dog", "a cat")


def test_one_image_under_two_spellings_is_one_image(tmp_path):
    text = "image,caption\na.png,a dog\nsub/../a.png,a cat\n"
    (rec,) = read_caption_file(_write(tmp_path, "c.csv", text))
    assert rec.captions == ("a dog", "a cat")


def _coco(tmp_path, images=None, annotations=None, drop=None):
    data = {
        "images": images or [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        "annotations": annotations or [{"image_id": 1, "caption": "a dog"}],
    }
    if drop:
        data.pop(drop)
    return _write(tmp_path, "c.json", json.dumps(data))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"drop": "annotations"}, KeyError, r"'annotations' in the COCO captions file .*c\.json"),
        ({"images": [{"id": 1, "file_name": "a.jpg", "height": 3}]}, KeyError, r"'width'"),
        (
            {"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3}] * 2},
            ValueError,
            r"image id once .*\[1\]",
        ),
    ],
)
def test_broken_coco_files_name_file_and_field(tmp_path, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        read_coco_captions(_coco(tmp_path, **kwargs), tmp_path)


def test_coco_unknown_category_and_orphan_captions(tmp_path):
    path = _coco(
        tmp_path,
        annotations=[{"image_id": 1, "caption": "a dog"}, {"image_id": 9, "caption": "lost"}],
    )
    with pytest.warns(UserWarning, match=r"1 captions refer to image ids not in 'images'.*\(9\)"):
        (rec,) = read_coco_captions(path, tmp_path)
    assert rec.captions == ("a dog",)
    inst = _write(
        tmp_path,
        "i.json",
        json.dumps(
            {
                "categories": [{"id": 1, "name": "dog"}],
                "annotations": [{"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5]}],
            }
        ),
    )
    with pytest.raises(KeyError, match=r"category id 7 .*i\.json"):
        read_coco_captions(_coco(tmp_path), tmp_path, inst)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_images_below_one_is_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match=r"`max_images`.*>= 1"):
        read_coco_captions(_coco(tmp_path), tmp_path, max_images=bad)
    with pytest.raises(ValueError, match=r"`max_images`"):
        COCOCaptionDataModule(root=str(tmp_path), max_images=bad)


def _flickr(tmp_path, ids, xml=None):
    (tmp_path / "Sentences").mkdir(exist_ok=True)
    (tmp_path / "Annotations").mkdir(exist_ok=True)
    for i in set(ids):
        (tmp_path / "Sentences" / f"{i}.txt").write_text("[/EN#1/people A man] walks\n")
    if xml is not None:
        (tmp_path / "Annotations" / f"{ids[0]}.xml").write_text(xml)
    (tmp_path / "train.txt").write_text("\n".join(ids))
    return tmp_path


def test_flickr_faults_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"once in .*train\.txt.*\['7'\]"):
        read_flickr30k_entities(_flickr(tmp_path, ["7", "7"]), "train")
    with pytest.raises(ValueError, match=r"7\.xml to be XML"):
        read_flickr30k_entities(_flickr(tmp_path, ["7"], "<annotation><object>"), "train")
    (tmp_path / "Annotations" / "7.xml").unlink()
    with pytest.warns(UserWarning, match=r"1 images have no Annotations/<id>\.xml"):
        read_flickr30k_entities(_flickr(tmp_path, ["7"]), "train")
    (tmp_path / "train.txt").write_text("")
    with pytest.raises(ValueError, match=r"image ids in .*train\.txt.*empty"):
        read_flickr30k_entities(tmp_path, "train")


def test_a_truncated_image_file_is_named(tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    captions = _write(tmp_path, "c.csv", "image,caption\na.png,a red square\n")
    dataset = _val_dataset(captions)
    with pytest.raises(ValueError, match=r"a\.png \(image 0\), but it could not be read"):
        dataset.load_image(0)


def test_probe_boxes_outside_every_image_are_an_error_not_zero_probes(tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "b.png")
    text = (
        "image,caption,phrase,box\n"
        "a.png,a red square,square,100 100 120 120\n"  # outside the 40x30 image
        "b.png,a blue square,square,5 5 30 25\n"
    )
    captions = _write(tmp_path, "c.csv", text)
    dataset = _val_dataset(captions)
    with pytest.warns(UserWarning, match=r"1 phrase\(s\) were skipped as probes"):
        keys = dataset.draw_probe_indices(2, torch.Generator().manual_seed(0))
    assert len(keys) == 1
    only_outside = _write(
        tmp_path, "d.csv", text.splitlines()[0] + "\n" + text.splitlines()[1] + "\n"
    )
    dataset = _val_dataset(only_outside)
    with pytest.raises(ValueError, match=r"all 1 boxes tried lie outside"):
        dataset.draw_probe_indices(2, torch.Generator().manual_seed(0))
