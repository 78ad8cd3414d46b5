"""CIFAR-style Wide ResNet (Zagoruyko & Komodakis, 2016) in the FixMatch / USB layout."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lico_lightning._validation import check_positive
from lico_lightning.models._base import _SmallImageCNN

__all__ = ["WideResNet"]


class _WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-act-conv3x3-BN-act-(dropout)-conv3x3 plus shortcut.

    When the block changes width (first block of a group) the pre-activation ``act(bn1(x))`` is
    shared by the residual branch and the 1×1 projection shortcut, as in the original WRN code.
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        drop_rate: float,
        bn_momentum: float,
        leaky_slope: float,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum, eps=1e-3)
        self.act1 = nn.LeakyReLU(leaky_slope)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum, eps=1e-3)
        self.act2 = nn.LeakyReLU(leaky_slope)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        out = self.act2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        identity = x if self.shortcut is None else self.shortcut(pre)
        return identity + out


class WideResNet(_SmallImageCNN):
    """WRN-``depth``-``widen_factor`` for small images (CIFAR / SVHN), FixMatch / USB layout.

    Stem conv3×3 (16 channels), three groups of ``n = (depth - 4) / 6`` pre-activation basic
    blocks with widths ``16k, 32k, 64k`` and strides ``1, 2, 2``, then BN + leaky ReLU, global
    average pooling and a linear head. Layout and initialisation follow the semi-supervised
    codebases the LICO paper follows for its CIFAR / SVHN experiments (FixMatch, FlexMatch /
    USB): leaky ReLU slope 0.1, BN eps 1e-3, no dropout, Kaiming-normal (fan-out) convolutions,
    Xavier-normal head; the first block of a group shares its BN-act pre-activation with the
    1×1 projection shortcut (Zagoruyko & Komodakis' original code does the same).

    One deliberate difference: BN momentum defaults to PyTorch's 0.1, not FixMatch's 0.001
    (TensorFlow decay 0.999). With 0.001 the running statistics need thousands of steps to
    settle, so short runs evaluate with garbage statistics (10 % validation accuracy on the
    digits after one epoch, against ~30 % with 0.1 and > 90 % after four epochs); the paper's
    limited-label settings have as few as 200 steps. Pass ``bn_momentum=0.001`` for
    FixMatch-length schedules. ``leaky_slope=0`` gives the original ReLU WRN.

    The feature map is ``(B, 64k, H/4, W/4)`` (8×8 for 32×32 inputs; LICO's ``h_psi[512, 64]``).

    Args:
        num_classes: Number of logits.
        depth: Total depth; ``depth - 4`` must be divisible by 6 (28 → 4 blocks per group).
        widen_factor: Width multiplier ``k``.
        in_channels: Input image channels.
        drop_rate: Dropout between the two convolutions of each block.
        bn_momentum: PyTorch BatchNorm momentum (weight of the new batch statistic); 0.001
            reproduces FixMatch / USB.
        leaky_slope: Negative slope of the leaky ReLUs (0 gives ReLU).

    Example:
        >>> import torch
        >>> net = WideResNet(num_classes=10, depth=10, widen_factor=1)
        >>> x = torch.randn(2, 3, 32, 32)
        >>> net.forward_features(x).shape
        torch.Size([2, 64, 8, 8])
        >>> net(x).shape, net.feature_shape(32)
        (torch.Size([2, 10]), (64, 64))
    """

    num_downsamples = 2  # strides 1, 2, 2

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 28,
        widen_factor: int = 2,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        bn_momentum: float = 0.1,
        leaky_slope: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("widen_factor", widen_factor)
        check_positive("in_channels", in_channels)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"Expected `depth` = 6n + 4 with n >= 1, but got {depth}.")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"Expected `drop_rate` in [0, 1), but got {drop_rate!r}.")
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"Expected `bn_momentum` in (0, 1], but got {bn_momentum!r}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feature_channels = widths[3]
        self.cam_layer = "act"

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            blocks = [
                _WideBasicBlock(
                    widths[g] if i == 0 else widths[g + 1],
                    widths[g + 1],
                    stride if i == 0 else 1,
                    drop_rate,
                    bn_momentum,
                    leaky_slope,
                )
                for i in range(n)
            ]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3], momentum=bn_momentum, eps=1e-3)
        self.act = nn.LeakyReLU(leaky_slope)
        self.fc = nn.Linear(widths[3], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="leaky_relu", a=leaky_slope
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the feature map ``(B, 64k, ceil(H/4), ceil(W/4))`` after the final BN + act."""
        self._check_images(x, self.conv1)
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.act(self.bn(out))
