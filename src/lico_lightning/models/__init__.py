"""Image backbones (feature-map extractors) and their registry.

Every backbone is a plain ``nn.Module`` classifier (:class:`Backbone`): ``forward(x)`` gives
logits, ``forward_features(x)`` the last feature map ``(B, C, *spatial)`` and
``forward_head(features)`` the logits from it. Build one by name with :func:`create_backbone`.
"""

from lico_lightning.models._base import Backbone
from lico_lightning.models._preact_resnet import PreActResNet
from lico_lightning.models._registry import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)
from lico_lightning.models._torchvision_resnet import ResNetBackbone
from lico_lightning.models._vit import ViTBackbone
from lico_lightning.models._wide_resnet import WideResNet

__all__ = [
    "BACKBONES",
    "Backbone",
    "PreActResNet",
    "ResNetBackbone",
    "ViTBackbone",
    "WideResNet",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
