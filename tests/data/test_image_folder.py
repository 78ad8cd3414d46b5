"""ImageFolder data modules on generated PNG trees, k-shot sampling and class-name files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lico_lightning.data import (
    CUB200DataModule,
    Flowers102DataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    clean_class_name,
    load_class_names_file,
)

CUB_FOLDERS = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
WNIDS = ["n01440764", "n01443537", "n01484850"]


def _tree(root: Path, folders: list[str], per_split: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for folder in folders:
            d = root / split / folder
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"img_{i}.png")
    return root


@pytest.fixture
def cub(tmp_path) -> Path:
    return _tree(tmp_path / "cub", CUB_FOLDERS, {"train": 5, "val": 2})


def test_cleaned_names_shapes_and_k_shot(cub) -> None:
    dm = ImageFolderDataModule(
        str(cub), shots=2, image_size=8, resize_size=9, batch_size=4, num_workers=0, seed=1
    )
    assert dm.class_names == ["black footed albatross", "laysan albatross", "sooty albatross"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 6 and len(dm.val_dataset) == 6
    assert Counter(dm.train_dataset[i][1] for i in range(6)) == {0: 2, 1: 2, 2: 2}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.long
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 8, 8)
    same = ImageFolderDataModule(str(cub), shots=2, image_size=8, seed=1)
    same.setup("fit")
    other = ImageFolderDataModule(str(cub), shots=2, image_size=8, seed=2)
    other.setup("fit")
    assert same.labeled_indices == dm.labeled_indices != other.labeled_indices


def test_full_training_set_return_index_and_test_split(cub) -> None:
    dm = ImageFolderDataModule(str(cub), image_size=8, return_index=True, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 15
    _, y, index = dm.train_dataset[7]
    assert index == 7 and y == 1
    dm.setup("test")
    assert len(dm.test_dataset) == 6  # test_dir=None reuses val


def test_eval_pipeline_is_resize_then_centre_crop(cub) -> None:
    dm = ImageFolderDataModule(str(cub), image_size=8, resize_size=10, augment=True)
    names = [type(t).__name__ for t in dm._transforms(False).transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in dm._transforms(True).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]


def test_overrides_and_errors(cub, tmp_path) -> None:
    names = ["a", "b", "c"]
    assert ImageFolderDataModule(str(cub), class_names=names).class_names == names
    assert ImageFolderDataModule(str(cub), clean_names=False).class_names == CUB_FOLDERS
    with pytest.raises(ValueError, match="Expected 3 class names"):
        ImageFolderDataModule(str(cub), class_names=["a"])
    with pytest.raises(ValueError, match="at most one of"):
        ImageFolderDataModule(str(cub), class_names=names, class_names_file="x.json")
    with pytest.raises(FileNotFoundError, match=r"split folder .*nope"):
        ImageFolderDataModule(str(cub), val_dir="nope")
    with pytest.raises(FileNotFoundError, match=r"caltech\.edu"):
        CUB200DataModule(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="shots"):
        ImageFolderDataModule(str(cub), shots=0)
    dm = ImageFolderDataModule(str(cub), shots=6)
    with pytest.raises(ValueError, match="at least 6 samples in every class"):
        dm.setup("fit")


def test_val_split_with_other_classes_is_rejected(tmp_path) -> None:
    root = _tree(tmp_path, ["cat", "dog"], {"train": 1})
    _tree(tmp_path, ["cat", "cow"], {"val": 1})
    dm = ImageFolderDataModule(str(root))
    with pytest.raises(ValueError, match="val split to have the training split's 2"):
        dm.setup("validate")


def test_fine_grained_warns_on_unexpected_class_count_and_numeric_names(tmp_path, cub) -> None:
    with pytest.warns(UserWarning, match="Expected 200 class folders for CUB-200, but found 3"):
        CUB200DataModule(str(cub))
    flowers = _tree(tmp_path / "flowers", ["1", "2", "10"], {"train": 1, "val": 1})
    with pytest.warns(UserWarning) as record:
        dm = Flowers102DataModule(str(flowers))
    messages = [str(w.message) for w in record]
    assert any("Expected 102 class folders" in m for m in messages)
    assert any("folder ids" in m for m in messages)
    assert dm.class_names == ["1", "10", "2"]  # ImageFolder's sorted order


@pytest.mark.filterwarnings("ignore:Expected 1000 class folders for ImageNet")
def test_imagenet_wnids_with_mapping_files(tmp_path) -> None:
    root = _tree(tmp_path / "imnet", WNIDS, {"train": 1, "val": 1})
    with pytest.warns(UserWarning, match="folder ids"):
        assert ImageNetDataModule(str(root)).class_names == WNIDS
    index_json = tmp_path / "imagenet_class_index.json"
    index_json.write_text(
        json.dumps({"0": [WNIDS[0], "tench"], "1": [WNIDS[1], "goldfish"], "2": [WNIDS[2], "great_white_shark"]})
    )  # fmt: skip
    dm = ImageNetDataModule(str(root), class_names_file=str(index_json))
    assert dm.class_names == ["tench", "goldfish", "great white shark"]


@pytest.mark.filterwarnings("ignore:Expected 1000 class folders for ImageNet")
@pytest.mark.filterwarnings("ignore:ImageNet class names are folder ids")
def test_imagenet_is_the_image_folder_module_with_three_other_defaults(tmp_path) -> None:
    import inspect

    from lico_lightning.data import ImageFolderDataModule

    ours = inspect.signature(ImageNetDataModule).parameters
    base = inspect.signature(ImageFolderDataModule, eval_str=True).parameters
    assert list(ours) == list(base)  # every option, in order: what LightningCLI reads
    changed = {k: (base[k].default, p.default) for k, p in ours.items() if p != base[k]}
    assert changed == {"clean_names": (True, False), "batch_size": (64, 128), "num_workers": (4, 8)}
    root = _tree(tmp_path / "imnet", WNIDS, {"train": 1, "val": 1})
    dm = ImageNetDataModule(str(root), image_size=8, resize_size=9)
    assert (dm.batch_size, dm.num_workers, dm.class_names) == (128, 8, WNIDS)  # not cleaned
    assert dict(dm.hparams) == {
        **{k: p.default for k, p in ours.items() if k != "class_names"},
        "data_dir": str(root),
        "image_size": 8,
        "resize_size": 9,
    }
    positional = ImageNetDataModule(str(root), "train", "val", None, None, 8, 9, False)
    assert positional.augment is False and positional.hparams["batch_size"] == 128
    with pytest.raises(TypeError, match="unexpected keyword"):
        ImageNetDataModule(str(root), batch_sizes=3)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("names.json", json.dumps(["tench", "goldfish", "great_white_shark"])),
        ("names.json", json.dumps(dict(zip(WNIDS[::-1], ["great white shark", "goldfish", "tench"])))),
        ("LOC_synset_mapping.txt",
         "n01484850 great white shark, white shark, man-eater\n"
         "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"),
        ("names.txt", "tench\ngoldfish\n\ngreat white shark\n"),
    ],
)  # fmt: skip
def test_class_name_file_formats(tmp_path, filename: str, content: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    assert load_class_names_file(path, WNIDS) == ["tench", "goldfish", "great white shark"]


def test_class_name_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="mapping file"):
        load_class_names_file(tmp_path / "none.json", WNIDS)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({WNIDS[0]: "tench"}))
    with pytest.raises(ValueError, match="no name for 2"):
        load_class_names_file(partial, WNIDS)
    short = tmp_path / "short.txt"
    short.write_text("tench\n")
    with pytest.raises(ValueError, match="Expected 3 class names"):
        load_class_names_file(short, WNIDS)


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("001.Black_footed_Albatross", "black footed albatross"),
        ("200.Common_Yellowthroat", "common yellowthroat"),
        ("707-320", "707-320"),
        ("AM General Hummer SUV 2000", "am general hummer suv 2000"),
        ("  spaced__out ", "spaced out"),
        ("1.5_ton_truck", "1.5 ton truck"),
    ],
)
def test_clean_class_name(folder: str, name: str) -> None:
    assert clean_class_name(folder) == name
