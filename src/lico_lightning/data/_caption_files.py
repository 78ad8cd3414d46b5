"""Caption data from files: COCO captions (+ instance boxes), Flickr30k Entities, CSV / JSONL."""

from __future__ import annotations

import csv
import json
import re
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
    data = json.loads(_require_file(captions_file, "COCO captions file").read_text())
    captions: dict[int, list[str]] = defaultdict(list)
    for ann in data["annotations"]:
        captions[ann["image_id"]].append(ann["caption"].strip())
    boxes: dict[int, dict[str, list[Box]]] = defaultdict(lambda: defaultdict(list))
    if instances_file is not None:
        inst = json.loads(_require_file(instances_file, "COCO instances file").read_text())
        names = {c["id"]: c["name"] for c in inst["categories"]}
        for ann in inst["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w >= 1 and h >= 1:
                boxes[ann["image_id"]][names[ann["category_id"]]].append((x, y, x + w, y + h))
    records = []
    for image in sorted(data["images"], key=lambda im: im["id"]):
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
                image=_resolve(image_dir, image["file_name"]),
                captions=tuple(caps),
                phrases=tuple(per_caption),
                size=(int(image["width"]), int(image["height"])),
            )
        )
        if max_images is not None and len(records) >= max_images:
            break
    return records


# ----------------------------------------------------------------------------- Flickr30k Entities
_ENTITY = re.compile(r"\[/EN#(\d+)/(\S+) ([^\]]+)\]")


def _flickr_boxes(xml_file: Path) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = defaultdict(list)
    for obj in ET.parse(xml_file).getroot().iter("object"):
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
    root = Path(root)
    ids = (
        _require_file(root / f"{split}.txt", f"Flickr30k Entities split file {split!r}")
        .read_text()
        .split()
    )
    image_dir = root / "flickr30k-images" if image_dir is None else Path(image_dir)
    records = []
    for image_id in ids:
        xml_file = root / "Annotations" / f"{image_id}.xml"
        boxes = _flickr_boxes(xml_file) if xml_file.exists() else {}
        size = None
        if xml_file.exists():
            node = ET.parse(xml_file).getroot().find("size")
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
    return records


# ----------------------------------------------------------------------------- CSV / JSONL
def _parse_box(value: Any, where: str) -> Box | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = (
            json.loads(value) if value.strip().startswith("[") else value.replace(",", " ").split()
        )
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4:
        raise ValueError(
            f"Expected the box of {where} as 4 numbers x0 y0 x1 y1, but got {value!r}."
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
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    grouped: dict[str, list[tuple[str, tuple[PhraseBox, ...]]]] = defaultdict(list)
    for n, row in enumerate(rows, start=1):
        for key in (image_key, caption_key):
            if not row.get(key):
                raise ValueError(
                    f"Expected a non-empty {key!r} in row {n} of {path.name}, but got {row.get(key)!r}."
                )
        caption, phrase = str(row[caption_key]).strip(), row.get(phrase_key) or ""
        items: tuple[PhraseBox, ...] = ()
        if phrase:
            start = caption.find(phrase)
            if start < 0:
                raise ValueError(
                    f"Expected the phrase {phrase!r} of row {n} to occur in its caption {caption!r}, but it does not."
                )
            box = _parse_box(row.get(box_key), f"row {n}")
            if box is None:
                raise ValueError(
                    f"Expected a box for the phrase {phrase!r} of row {n}, but got none."
                )
            items = (PhraseBox(phrase, (start, start + len(phrase)), box),)
        grouped[_resolve(root, row[image_key])].append((caption, items))
    return [
        CaptionRecord(
            image=image, captions=tuple(c for c, _ in caps), phrases=tuple(p for _, p in caps)
        )
        for image, caps in grouped.items()
    ]


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
        self.save_hyperparameters(ignore=["zeroshot"])
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
        self.save_hyperparameters(ignore=["zeroshot"])
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
        self.save_hyperparameters(ignore=["zeroshot"])

    def _records(self, split: str) -> list[CaptionRecord]:
        h: Any = self.hparams
        path = {"train": h.train_file, "val": h.val_file, "test": h.test_file or h.val_file}[split]
        return read_caption_file(
            path, h.image_root, h.image_key, h.caption_key, h.phrase_key, h.box_key
        )
