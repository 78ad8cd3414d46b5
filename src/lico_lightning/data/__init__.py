"""LightningDataModules and offline datasets.

Every data module exposes ``class_names``, ``num_classes``, ``image_size``, ``mean`` and ``std``
from construction on and yields ``(image, target)`` batches (``(image, target, index)`` with
``return_index=True``) of normalised images. :class:`DigitsDataModule` is the embedded offline
default; the others read data the user has (torchvision ``download=True`` where available).
Training order is a pure function of ``(seed, epoch)`` (:class:`ResumableRandomSampler`).
"""

from lico_lightning.data._base import ImageDataModule
from lico_lightning.data._caption_files import (
    CaptionFileDataModule,
    COCOCaptionDataModule,
    Flickr30kEntitiesDataModule,
    read_caption_file,
    read_coco_captions,
    read_flickr30k_entities,
)
from lico_lightning.data._captions import (
    CaptionDataModule,
    CaptionDataset,
    CaptionRecord,
    GroundingProbe,
    PhraseBox,
    open_clip_preprocessing,
)
from lico_lightning.data._class_names import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DIGIT_CLASSES,
    check_class_names,
    clean_class_name,
    load_class_names_file,
)
from lico_lightning.data._concept_cache import (
    CaptionEmbeddings,
    ConceptImageDataset,
    ConceptPairDataset,
    EpochKeySampler,
    encode_caption_dataset,
    random_crop_flip,
)
from lico_lightning.data._concept_distillation import ConceptDistillationDataModule
from lico_lightning.data._datasets import IndexedDataset, TensorImageDataset
from lico_lightning.data._digits import DigitsDataModule
from lico_lightning.data._image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CUB200DataModule,
    FGVCAircraftDataModule,
    Flowers102DataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    StanfordCarsDataModule,
)
from lico_lightning.data._probes import draw_probe_indices, draw_probes, probe_items
from lico_lightning.data._sampler import ResumableRandomSampler
from lico_lightning.data._shapes import ShapesCaptionDataModule
from lico_lightning.data._shards import (
    ShardCaptionDataModule,
    ShardCaptionDataset,
    expand_shard_urls,
    read_shard_sizes,
    write_shards,
    write_shards_main,
)
from lico_lightning.data._shortcut import (
    CUE_COLOURS,
    SHORTCUT_SPLITS,
    ShortcutDataModule,
    ShortcutDataset,
)
from lico_lightning.data._splits import (
    class_balanced_indices,
    limited_label_indices,
    stratified_split_indices,
)
from lico_lightning.data._torchvision import CIFAR10DataModule, CIFAR100DataModule, SVHNDataModule

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "CUE_COLOURS",
    "DIGIT_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHORTCUT_SPLITS",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "COCOCaptionDataModule",
    "CUB200DataModule",
    "CaptionDataModule",
    "CaptionDataset",
    "CaptionEmbeddings",
    "CaptionFileDataModule",
    "CaptionRecord",
    "ConceptDistillationDataModule",
    "ConceptImageDataset",
    "ConceptPairDataset",
    "DigitsDataModule",
    "EpochKeySampler",
    "FGVCAircraftDataModule",
    "Flickr30kEntitiesDataModule",
    "Flowers102DataModule",
    "GroundingProbe",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "IndexedDataset",
    "PhraseBox",
    "ResumableRandomSampler",
    "SVHNDataModule",
    "ShapesCaptionDataModule",
    "ShardCaptionDataModule",
    "ShardCaptionDataset",
    "ShortcutDataModule",
    "ShortcutDataset",
    "StanfordCarsDataModule",
    "TensorImageDataset",
    "check_class_names",
    "class_balanced_indices",
    "clean_class_name",
    "draw_probe_indices",
    "draw_probes",
    "encode_caption_dataset",
    "expand_shard_urls",
    "limited_label_indices",
    "load_class_names_file",
    "open_clip_preprocessing",
    "probe_items",
    "random_crop_flip",
    "read_caption_file",
    "read_coco_captions",
    "read_flickr30k_entities",
    "read_shard_sizes",
    "stratified_split_indices",
    "write_shards",
    "write_shards_main",
]
