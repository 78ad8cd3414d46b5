"""Every explainer finds the declared CAM layer of this package's backbones (through a wrapper)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lico_lightning.explain import create_explainer
from lico_lightning.models import create_backbone


class Wrapper(nn.Module):
    """Like a LightningModule holding ``self.backbone``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


@pytest.mark.parametrize("backbone", ["resnet18", "preact_resnet18", "wrn28_2", "vit_tiny"])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "rise"])
def test_default_layer_of_each_backbone(backbone, method):
    torch.manual_seed(0)
    net = create_backbone(backbone, num_classes=3)
    for m in net.modules():  # torchvision's ViT head starts at zero: no gradient to explain
        if isinstance(m, nn.Linear) and not m.weight.any():
            nn.init.normal_(m.weight, std=0.1)
    size = 32 if backbone.startswith("vit") else 64  # ResNet-18 layer4 is 1x1 at 32 px
    kwargs = {"num_masks": 4, "grid_size": 3} if method == "rise" else {}
    explainer = create_explainer(method, Wrapper(net), **kwargs)
    out = explainer.attribute(torch.randn(2, 3, size, size), torch.tensor([0, 2]))
    assert out.shape == (2, size, size) and torch.isfinite(out).all()
    if method != "rise":
        assert explainer.layer_name == f"backbone.{net.cam_layer}"
        assert (out.flatten(1).amax(1) > 0).any()  # the map is not all zeros
