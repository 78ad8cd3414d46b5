"""CIFAR-style pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lico_lightning._validation import check_positive
from lico_lightning.models._base import _SmallImageCNN

__all__ = ["PreActResNet"]


class _PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; a width/stride change projects the pre-activation."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return identity + out


class PreActResNet(_SmallImageCNN):
    """Pre-activation ResNet for 32×32 inputs (PreAct-ResNet-18 = ``blocks=(2, 2, 2, 2)``).

    Stem conv3×3 (64 channels, stride 1, no max-pool), four stages of pre-activation basic
    blocks with widths 64 / 128 / 256 / 512 and strides 1 / 2 / 2 / 2, then the final BN + ReLU
    of the pre-activation design (He et al. 2016; some CIFAR re-implementations omit it), global
    average pooling and a linear head. Feature map ``(B, 512, H/8, W/8)``: 4×4 on 32×32 inputs.

    Args:
        num_classes: Number of logits.
        blocks: Blocks per stage.
        in_channels: Input image channels.
        base_width: Width of the first stage (doubles at every stage).

    Example:
        >>> import torch
        >>> net = PreActResNet(num_classes=10, blocks=(1, 1, 1, 1), base_width=8)
        >>> net.forward_features(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 64, 4, 4])
    """

    num_downsamples = 3  # strides 1 / 2 / 2 / 2

    def __init__(
        self,
        num_classes: int = 10,
        blocks: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        check_positive("base_width", base_width)
        blocks = tuple(blocks)
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"Expected `blocks` to be 4 positive ints, but got {blocks!r}.")
        widths = [base_width * 2**i for i in range(4)]
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feature_channels = widths[-1]
        self.cam_layer = "act"

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        stages = []
        for stage, (width, n) in enumerate(zip(widths, blocks)):
            layers = []
            for i in range(int(n)):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(_PreActBlock(in_planes, width, stride))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(widths[-1])
        self.act = nn.ReLU()
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the feature map ``(B, 8·base_width, ceil(H/8), ceil(W/8))``."""
        self._check_images(x, self.conv1)
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.act(self.bn(out))
