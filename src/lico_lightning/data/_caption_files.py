"""Caption data from files: COCO captions (+ instance boxes), Flickr30k Entities, CSV / JSONL."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lico_lightning.data._captions import (
    Box,
    CaptionDataModule,
    CaptionRecord,
    PhraseBox,
    _resolve,
)

__all__ = [
    "COCOCaptionDataModule",
    "CaptionFileDataModule",
    "Flickr30kEntitiesDataModule",
    "read_caption_file",
    "read_coco_captions",
    "read_flickr30k_entities",
]


def _require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Expected the {what} at {str(p)!r}, but it does not exist.")
    return p


def _check_max_images(max_images: int | None) -> None:
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
    ):
        raise ValueError(
            f"Expected `max_images` to be None (all) or an int >= 1, but got {max_images!r}."
        )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"Expected the {what} {path} to be JSON, but line {err.lineno} column {err.colno} "
            f"is not: {err.msg}."
        ) from None


def _field(mapping: Any, key: str, where: str) -> Any:
    """``mapping[key]`` with a ``KeyError`` that names the field and where it was missing."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise KeyError(f"Expected a field {key!r} in {where}, but it is missing.")
    return mapping[key]


def _norm(path: str) -> str:
    """``sub/../a.png`` and ``a.png`` are one image."""
    return os.path.normpath(path)


def _warn_dropped(what: str, items: list[Any], source: Path) -> None:
    if items:
        shown = ", ".join(str(i) for i in items[:5]) + (", ..." if len(items) > 5 else "")
        warnings.warn(f"{len(items)} {what} in {source} ({shown}).", stacklevel=3)


def _largest(boxes: list[Box]) -> Box:
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


# ----------------------------------------------------------------------------- COCO
def read_coco_captions(
    captions_file: str | Path,
    image_dir: str | Path,
    instances_file: str | Path | None = None,
    max_images: int | None = None,
) -> list[CaptionRecord]:
    """Records from COCO's ``captions_*.json`` (all captions of an image, usually 5).

    With ``instances_file`` (``instances_*.json``), each caption gets grounding phrases: every
    COCO category name that occurs in the caption as a word (singular or with an "s"), boxed by
    the largest non-crowd instance of that category, with the largest instance of another
    category in the image as distractor.

    Example:
        >>> import json, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "c.json").write_text(json.dumps({
        ...     "images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}],
        ...     "annotations": [{"image_id": 7, "caption": "Two dogs on a bench."}]}))
        >>> _ = (d / "i.json").write_text(json.dumps({
        ...     "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "bench"}],
        ...     "annotations": [{"image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 8], "iscrowd": 0},
        ...                     {"image_id": 7, "category_id": 2, "bbox": [0, 10, 40, 20], "iscrowd": 0}]}))
        >>> rec = read_coco_captions(d / "c.json", d, d / "i.json")[0]
        >>> [(p.phrase, p.box, p.distractor_box) for p in rec.phrases[0]]
        [('dogs', (1.0, 2.0, 11.0, 10.0), (0.0, 10.0, 40.0, 30.0)), ('bench', (0.0, 10.0, 40.0, 30.0), (1.0, 2.0, 11.0, 10.0))]
    """
    _check_max_images(max_images)
    captions_path = _require_file(captions_file, "COCO captions file")
    data = _read_json(captions_path, "COCO captions file")
    where = f"the COCO captions file {captions_path}"
    images = _field(data, "images", where)
    ids = [_field(im, "id", f"an entry of 'images' of {captions_path}") for im in images]
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise ValueError(
            f"Expected every image id once in 'images' of {captions_path}, but ids {repeated[:5]} "
            "are listed more than once."
        )
    captions: dict[int, list[str]] = defaultdict(list)
    for n, ann in enumerate(_field(data, "annotations", where)):
        at = f"annotation {n} of {captions_path}"
        captions[_field(ann, "image_id", at)].append(str(_field(ann, "caption", at)).strip())
    _warn_dropped(
        "captions refer to image ids not in 'images' and are skipped",
        sorted(set(captions) - set(ids)),
        captions_path,
    )
    boxes: dict[int, dict[str, list[Box]]] = defaultdict(lambda: defaultdict(list))
    if instances_file is not None:
        inst_path = _require_file(instances_file, "COCO instances file")
        inst = _read_json(inst_path, "COCO instances file")
        inst_where = f"the COCO instances file {inst_path}"
        names = {
            _field(c, "id", inst_where): _field(c, "name", inst_where)
            for c in _field(inst, "categories", inst_where)
        }
        for n, ann in enumerate(_field(inst, "annotations", inst_where)):
            if ann.get("iscrowd", 0):
                continue
            at = f"instance annotation {n} of {inst_path}"
            category = _field(ann, "category_id", at)
            if category not in names:
                raise KeyError(
                    f"Expected the category id {category!r} of {at} in its 'categories', but "
                    "it is not there."
                )
            x, y, w, h = (float(v) for v in _field(ann, "bbox", at))
            if w >= 1 and h >= 1:
                boxes[_field(ann, "image_id", at)][names[category]].append((x, y, x + w, y + h))
    records = []
    for image in sorted(images, key=lambda im: im["id"]):
        caps = captions.get(image["id"])
        if not caps:
            continue
        per_caption = []
        for caption in caps:
            found = []
            categories = boxes.get(image["id"], {})
            for name, cat_boxes in categories.items():
                m = re.search(rf"\b{re.escape(name)}s?\b", caption, flags=re.IGNORECASE)
                if m is None:
                    continue
                others = [_largest(b) for n, b in categories.items() if n != name]
                found.append(
                    (
                        m.start(),
                        PhraseBox(
                            m.group(0),
                            m.span(),
                            _largest(cat_boxes),
                            _largest(others) if others else None,
                        ),
                    )
                )
            per_caption.append(tuple(p for _, p in sorted(found, key=lambda t: t[0])))
        records.append(
            CaptionRecord(
                image=_resolve(image_dir, _field(image, "file_name", f"image {image['id']}")),
                captions=tuple(caps),
                phrases=tuple(per_caption),
                size=(
                    int(_field(image, "width", f"image {image['id']} of {captions_path}")),
                    int(_field(image, "height", f"image {image['id']} of {captions_path}")),
                ),
            )
        )
        if max_images is not None and len(records) >= max_images:
            break
    return records


# ----------------------------------------------------------------------------- Flickr30k Entities
_ENTITY = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]+)\]")


def _parse_xml(xml_file: Path) -> ET.Element:
    try:
        return ET.parse(xml_file).getroot()
    except ET.ParseError as err:
        raise ValueError(
            f"Expected the Flickr30k Entities annotation {xml_file} to be XML, but it is not "
            f"({err})."
        ) from None


def _flickr_boxes(root: ET.Element) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = defaultdict(list)
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        x0, y0, x1, y1 = (float(box.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        for name in obj.iter("name"):
            out[str(name.text)].append((x0, y0, x1, y1))
    return out


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def read_flickr30k_entities(
    root: str | Path, split: str, image_dir: str | Path | None = None, max_images: int | None = None
) -> list[CaptionRecord]:
    """Records from Flickr30k Entities (``{split}.txt``, ``Sentences/``, ``Annotations/``).

    Every bracketed entity ``[/EN#18/people A man]`` becomes a phrase ("A man") boxed by the
    union of its annotated boxes (``Annotations/<id>.xml``, entities without boxes are skipped),
    with the union box of another entity of the image as distractor. Images are
    ``image_dir/<id>.jpg`` (default ``root/flickr30k-images``).
    """
    _check_max_images(max_images)
    root = Path(root)
    split_file = _require_file(root / f"{split}.txt", f"Flickr30k Entities split file {split!r}")
    ids = split_file.read_text().split()
    if not ids:
        raise ValueError(f"Expected image ids in {split_file}, but it is empty.")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise ValueError(
            f"Expected every image id once in {split_file}, but {repeated[:5]} are listed more "
            "than once."
        )
    image_dir = root / "flickr30k-images" if image_dir is None else Path(image_dir)
    records, unannotated = [], []
    for image_id in ids:
        xml_file = root / "Annotations" / f"{image_id}.xml"
        xml = _parse_xml(xml_file) if xml_file.exists() else None
        boxes = _flickr_boxes(xml) if xml is not None else {}
        if xml is None:
            unannotated.append(image_id)
        size = None
        if xml is not None:
            node = xml.find("size")
            if node is not None:
                size = (int(node.findtext("width", "0")), int(node.findtext("height", "0")))
        captions, phrases = [], []
        sentences = root / "Sentences" / f"{image_id}.txt"
        for line in (
            _require_file(sentences, "Flickr30k Entities sentence file").read_text().splitlines()
        ):
            if not line.strip():
                continue
            text, found, pos = "", [], 0
            for m in _ENTITY.finditer(line):
                text += line[pos : m.start()]
                start = len(text)
                text += m.group(3)
                found.append((m.group(1), m.group(3), (start, len(text))))
                pos = m.end()
            text += line[pos:]
            items = []
            for entity, phrase, span in found:
                if entity not in boxes:
                    continue
                others = [_union(b) for e, b in boxes.items() if e != entity]
                items.append(
                    PhraseBox(phrase, span, _union(boxes[entity]), others[0] if others else None)
                )
            captions.append(text.strip())
            phrases.append(tuple(items))
        records.append(
            CaptionRecord(
                image=str(image_dir / f"{image_id}.jpg"),
                captions=tuple(captions),
                phrases=tuple(phrases),
                size=size if size and all(size) else None,
            )
        )
        if max_images is not None and len(records) >= max_images:
            break
    _warn_dropped(
        "images have no Annotations/<id>.xml file, so no grounding boxes", unannotated, root
    )
    return records


# ----------------------------------------------------------------------------- CSV / JSONL
def _parse_box(value: Any, where: str) -> Box | None:
    if value is None or value == "":
        return None
    raw = value
    try:
        if isinstance(value, str):
            value = (
                json.loads(value)
                if value.strip().startswith("[")
                else value.replace(",", " ").split()
            )
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        box = ()
    if len(box) != 4:
        raise ValueError(f"Expected the box of {where} as 4 numbers x0 y0 x1 y1, but got {raw!r}.")
    if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(
            f"Expected the box of {where} as finite x0 y0 x1 y1 with x1 > x0 and y1 > y0, but "
            f"got {raw!r}."
        )
    return box


def read_caption_file(
    path: str | Path,
    image_root: str | Path | None = None,
    image_key: str = "image",
    caption_key: str = "caption",
    phrase_key: str = "phrase",
    box_key: str = "box",
) -> list[CaptionRecord]:
    """Records from a CSV (header row) or JSONL file of image path, caption (+ phrase, box).

    Rows with the same image path are one image with several captions. ``box`` is
    ``"x0 y0 x1 y1"`` (CSV; commas allowed) or a list (JSONL) in pixels of the original image;
    the phrase must occur in its caption (its first occurrence is used). Relative image paths
    are resolved against ``image_root`` (default: the file's folder).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
        >>> _ = f.write_text("image,caption,phrase,box\\na.png,a dog on grass,dog,1 2 8 9\\n"
        ...                  "a.png,grass and a dog,,\\n")
        >>> rec = read_caption_file(f)[0]
        >>> rec.captions, rec.phrases[0][0].char_span, rec.phrases[1]
        (('a dog on grass', 'grass and a dog'), (2, 5), ())
    """
    path = _require_file(path, "caption file")
    root = path.parent if image_root is None else Path(image_root)
    rows = _caption_rows(path)
    if not rows:
        raise ValueError(f"Expected at least one caption row in {path}, but it has none.")
    grouped: dict[str, list[tuple[str, tuple[PhraseBox, ...]]]] = defaultdict(list)
    for n, row in rows:
        for key in (image_key, caption_key):
            if not row.get(key):
                raise ValueError(
                    f"Expected a non-empty {key!r} in {n} of {path}, but got {row.get(key)!r}."
                )
        caption, phrase = str(row[caption_key]).strip(), row.get(phrase_key) or ""
        items: tuple[PhraseBox, ...] = ()
        if phrase:
            start = caption.find(phrase)
            if start < 0:
                raise ValueError(
                    f"Expected the phrase {phrase!r} of {n} of {path} to occur in its caption "
                    f"{caption!r}, but it does not."
                )
            box = _parse_box(row.get(box_key), f"{n} of {path}")
            if box is None:
                raise ValueError(
                    f"Expected a box for the phrase {phrase!r} of {n} of {path}, but got none."
                )
            items = (PhraseBox(phrase, (start, start + len(phrase)), box),)
        grouped[_norm(_resolve(root, str(row[image_key])))].append((caption, items))
    return [
        CaptionRecord(
            image=image, captions=tuple(c for c, _ in caps), phrases=tuple(p for _, p in caps)
        )
        for image, caps in grouped.items()
    ]


def _caption_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs of a JSONL file (one object a line), a JSON file (an array of
    objects, or JSONL), or a CSV file with a header row; ``where`` names the file's line."""
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".json" and text.lstrip().startswith("["):
        data = _read_json(path, "caption file")
        rows = [(f"item {n}", row) for n, row in enumerate(data)]
    elif suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"Expected a JSON object on line {n} of {path}, but it is not JSON "
                    f"({err.msg} at column {err.colno})."
                ) from None
    else:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [(f"line {reader.line_num}", dict(row)) for row in reader]
    for where, row in rows:
        if not isinstance(row, dict):
            raise ValueError(
                f"Expected a JSON object (with image and caption fields) on {where} of {path}, "
                f"but got a {type(row).__name__}."
            )
    return rows


# ----------------------------------------------------------------------------- data modules
class _RecordsDataModule(CaptionDataModule):
    """A caption data module whose splits come from ``_records(split)``."""

    def _records(self, split: str) -> list[CaptionRecord]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Read the split files of ``stage``."""
        super().setup(stage)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._dataset(self._records("train"), train=True)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._dataset(self._records("val"), train=False)
        if stage in (None, "test", "predict") and self.test_dataset is None:
            self.test_dataset = self._dataset(self._records("test"), train=False)


class COCOCaptionDataModule(_RecordsDataModule):
    """COCO captions (``captions_*.json``), boxes for grounding probes from ``instances_*.json``.

    Layout under ``root`` (COCO 2017 as downloaded): ``train2017/``, ``val2017/``,
    ``annotations/captions_{train,val}2017.json``, ``annotations/instances_val2017.json``.
    The test split is the validation split unless ``test_captions`` is given (e.g. a Karpathy
    test file in the same format). Images go through the model's open_clip preprocessing.

    Args:
        root: COCO folder.
        model_name / model_cfg: the open_clip model whose preprocessing and tokenizer to use.
        train_images / val_images: image folders (relative to ``root``).
        train_captions / val_captions / test_captions: caption files (relative to ``root``).
        val_instances: instances file for the probes' boxes (``None``: no probes).
        max_images: cap per split (quick runs).
        batch_size, num_workers, seed: loaders; seed of the training order.
        truncate: cut captions longer than the context length instead of raising.
        zeroshot: optional image classification data module for zero-shot accuracy.
    """

    def __init__(
        self,
        root: str = "data/coco",
        model_name: str = "ViT-B-32",
        model_cfg: dict[str, Any] | None = None,
        train_images: str = "train2017",
        val_images: str = "val2017",
        train_captions: str = "annotations/captions_train2017.json",
        val_captions: str = "annotations/captions_val2017.json",
        test_captions: str | None = None,
        val_instances: str | None = "annotations/instances_val2017.json",
        max_images: int | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        truncate: bool = False,
        zeroshot: pl.LightningDataModule | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            model_cfg=model_cfg,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            truncate=truncate,
            zeroshot=zeroshot,
        )
        _check_max_images(max_images)
        self.root = Path(root)

    def _records(self, split: str) -> list[CaptionRecord]:
        h: Any = self.hparams
        if split == "train":
            return read_coco_captions(
                self.root / h.train_captions, self.root / h.train_images, max_images=h.max_images
            )
        captions = h.test_captions if split == "test" and h.test_captions else h.val_captions
        instances = None if h.val_instances is None else self.root / h.val_instances
        return read_coco_captions(
            self.root / captions, self.root / h.val_images, instances, h.max_images
        )


class Flickr30kEntitiesDataModule(_RecordsDataModule):
    """Flickr30k Entities: 5 captions per image, every entity phrase with its boxes.

    Layout under ``root``: ``train.txt`` / ``val.txt`` / ``test.txt`` (image ids),
    ``Sentences/<id>.txt``, ``Annotations/<id>.xml`` (from the Flickr30k Entities repository)
    and ``flickr30k-images/<id>.jpg`` (the Flickr30k images). The standard phrase-grounding
    benchmark; every caption's phrases become grounding probes.

    Args:
        root: the dataset folder.
        model_name / model_cfg: the open_clip model whose preprocessing and tokenizer to use.
        image_dir: images folder (default ``root/flickr30k-images``).
        max_images: cap per split (quick runs).
        batch_size, num_workers, seed, truncate, zeroshot: as :class:`COCOCaptionDataModule`.
    """

    def __init__(
        self,
        root: str = "data/flickr30k_entities",
        model_name: str = "ViT-B-32",
        model_cfg: dict[str, Any] | None = None,
        image_dir: str | None = None,
        max_images: int | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        truncate: bool = False,
        zeroshot: pl.LightningDataModule | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            model_cfg=model_cfg,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            truncate=truncate,
            zeroshot=zeroshot,
        )
        _check_max_images(max_images)
        self.root = Path(root)

    def _records(self, split: str) -> list[CaptionRecord]:
        h: Any = self.hparams
        return read_flickr30k_entities(self.root, split, h.image_dir, h.max_images)


class CaptionFileDataModule(_RecordsDataModule):
    """Your own pairs: CSV (header row) or JSONL files of image path, caption (+ phrase, box).

    See :func:`read_caption_file` for the format. ``test_file`` defaults to ``val_file``.

    Args:
        train_file / val_file / test_file: the split files.
        model_name / model_cfg: the open_clip model whose preprocessing and tokenizer to use.
        image_root: folder relative image paths are resolved against (default: each file's).
        image_key / caption_key / phrase_key / box_key: column (CSV) or key (JSONL) names.
        batch_size, num_workers, seed, truncate, zeroshot: as :class:`COCOCaptionDataModule`.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        test_file: str | None = None,
        model_name: str = "ViT-B-32",
        model_cfg: dict[str, Any] | None = None,
        image_root: str | None = None,
        image_key: str = "image",
        caption_key: str = "caption",
        phrase_key: str = "phrase",
        box_key: str = "box",
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int = 0,
        truncate: bool = False,
        zeroshot: pl.LightningDataModule | None = None,
    ) -> None:
        super().__init__(
            model_name=model_name,
            model_cfg=model_cfg,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            truncate=truncate,
            zeroshot=zeroshot,
        )

    def _records(self, split: str) -> list[CaptionRecord]:
        h: Any = self.hparams
        path = {"train": h.train_file, "val": h.val_file, "test": h.test_file or h.val_file}[split]
        return read_caption_file(
            path, h.image_root, h.image_key, h.caption_key, h.phrase_key, h.box_key
        )
