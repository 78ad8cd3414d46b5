"""Class-name lists, folder-name clean-up and mapping files (ImageNet wnids → names)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DIGIT_CLASSES",
    "check_class_names",
    "clean_class_name",
    "load_class_names_file",
]

DIGIT_CLASSES: list[str] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
]

# torchvision.datasets.CIFAR10(...).classes (read from batches.meta), fixed so the names are
# known before the data is on disk (LightningCLI links them into the model at construction).
CIFAR10_CLASSES: list[str] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# torchvision.datasets.CIFAR100(...).classes (fine labels, alphabetical).
CIFAR100_CLASSES: list[str] = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

_NUMERIC_PREFIX = re.compile(r"^\d+\.(?=\D)")


def clean_class_name(folder_name: str, lowercase: bool = True) -> str:
    """Readable class name from a dataset folder name.

    Drops a numeric ``"NNN."`` prefix (CUB-200), turns underscores into spaces, collapses
    whitespace and (by default) lowercases. Names like ``"707-320"`` are left intact.

    Example:
        >>> clean_class_name("001.Black_footed_Albatross")
        'black footed albatross'
        >>> clean_class_name("Boeing 707-320", lowercase=False)
        'Boeing 707-320'
    """
    name = _NUMERIC_PREFIX.sub("", folder_name).replace("_", " ")
    name = " ".join(name.split())
    return name.lower() if lowercase else name


def check_class_names(class_names: Sequence[str], num_classes: int) -> list[str]:
    """Return ``class_names`` as a list after checking its type and count.

    Example:
        >>> check_class_names(["cat", "dog"], 2)
        ['cat', 'dog']
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(
            f"Expected `class_names` to be a list of str, but got {type(class_names).__name__}."
        )
    names = list(class_names)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise TypeError(f"Expected `class_names` to hold non-empty str, but got {names!r}.")
    if len(names) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class names (one per class), but got {len(names)}."
        )
    return names


def _tidy(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def load_class_names_file(path: str | Path, folder_names: Sequence[str]) -> list[str]:
    """Read human-readable names for ``folder_names`` (e.g. ImageNet wnids) from a file.

    Accepted formats (underscores become spaces):

    * JSON list: one name per class, in class-index (sorted folder) order.
    * JSON object ``{folder: name}``.
    * JSON object ``{index: [folder, name]}`` (Keras' ``imagenet_class_index.json``).
    * Text, ``folder name, synonym, ...`` per line (Kaggle's ``LOC_synset_mapping.txt``):
      the first synonym is kept.
    * Text, one name per line in class-index order.

    Args:
        path: The mapping file.
        folder_names: Class folder names in class-index order.

    Returns:
        One name per folder, in the order of ``folder_names``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a class-name mapping file at {path}, but none exists.")
    folders = list(folder_names)
    text = path.read_text(encoding="utf-8")
    mapping: dict[str, str] | None = None
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            return check_class_names([_tidy(str(n)) for n in data], len(folders))
        if not isinstance(data, dict):
            raise ValueError(f"Expected a JSON list or object in {path}, but got {type(data)}.")
        mapping = {}
        for key, value in data.items():
            if isinstance(value, (list, tuple)) and len(value) == 2:
                mapping[str(value[0])] = _tidy(str(value[1]))
            else:
                mapping[str(key)] = _tidy(str(value))
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        folder_set = set(folders)
        if lines and all(ln.split(maxsplit=1)[0] in folder_set for ln in lines):
            mapping = {}
            for ln in lines:
                parts = ln.split(maxsplit=1)
                mapping[parts[0]] = _tidy(parts[1].split(",")[0]) if len(parts) > 1 else parts[0]
        else:
            return check_class_names([_tidy(ln) for ln in lines], len(folders))
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise ValueError(
            f"Expected {path} to name every class folder, but got no name for "
            f"{len(missing)} of them, e.g. {missing[:3]}."
        )
    return [mapping[f] for f in folders]
