"""Every registered backbone: shapes, the forward = head ∘ features split, feature_shape, CAM layer.

References: torchvision's own models (same state dict) for the ResNets and ViTs, published
parameter counts for WRN-28-k and PreAct-ResNet-18, real forward passes for feature_shape.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._api import WeightsEnum
from torchvision.models.vision_transformer import VisionTransformer

from lico_lightning.models import (
    Backbone,
    PreActResNet,
    ResNetBackbone,
    ViTBackbone,
    WideResNet,
    create_backbone,
    list_backbones,
    register_backbone,
)
from lico_lightning.models._torchvision_resnet import resolve_torchvision_weights

# name -> (constructor kwargs, input size) small enough for CPU tests with random weights.
CASES: dict[str, tuple[dict, int]] = {
    "resnet18": ({}, 64),
    "resnet50": ({}, 32),
    "wrn28_2": ({}, 32),
    "wrn28_8": ({}, 8),
    "wrn28_10": ({}, 8),
    "preact_resnet18": ({}, 16),
    "vit_b_16": ({"image_size": 32}, 32),
    "vit_tiny": ({}, 32),
}


def test_every_registered_backbone_has_a_test_case() -> None:
    assert sorted(CASES) == list_backbones()


@pytest.fixture(scope="module")
def built() -> dict[str, Backbone]:
    torch.manual_seed(0)
    return {name: create_backbone(name, num_classes=7, **kw) for name, (kw, _) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_is_head_of_features(name: str, built: dict[str, Backbone]) -> None:
    net = built[name].eval()
    size = CASES[name][1]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = net.forward_features(x)
        logits = net(x)
        head = net.forward_head(feats)
    c, spatial = net.feature_channels, net.feature_spatial_shape(size)
    assert feats.shape == (2, c, *spatial)
    assert net.feature_shape(size) == (c, feats[0, 0].numel())
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, head)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_cam_layer_output_maps_to_feature_grid(name: str, built: dict[str, Backbone]) -> None:
    net = built[name].eval()
    size = CASES[name][1]
    x = torch.randn(2, 3, size, size)
    seen: list[torch.Tensor] = []
    handle = net.cam_module.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            feats = net.forward_features(x)
    finally:
        handle.remove()
    cam = net.reshape_cam_activation(seen[-1])
    assert cam.ndim == 4 and cam.shape[:2] == (2, net.feature_channels)
    if isinstance(net, ViTBackbone):
        assert cam.shape[2:] == net.patch_grid()
        # The CAM map is the patch tokens (prefix dropped) folded row-major onto the grid.
        torch.testing.assert_close(cam.flatten(2), seen[-1][:, 1:, :].transpose(1, 2))
    else:
        torch.testing.assert_close(cam, feats)  # CNNs: the CAM layer *is* the feature map


# One per backbone class; the large configurations share their code.
@pytest.mark.parametrize("name", ["resnet18", "wrn28_2", "preact_resnet18", "vit_tiny"])
def test_gradients_reach_the_input(name: str, built: dict[str, Backbone]) -> None:
    net = built[name].train()
    size = CASES[name][1]
    x = torch.randn(2, 3, size, size, requires_grad=True)
    # Through the features (a fresh ViT head is zero-initialised, so logits ignore x) ...
    (g,) = torch.autograd.grad(net.forward_features(x).square().mean(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # ... and into the head's parameters.
    head = [p for n, p in net.named_parameters() if n.startswith(("fc.", "heads."))]
    grads = torch.autograd.grad(net(x).logsumexp(-1).sum(), head)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------ independent references
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_matches_torchvision(arch: str, built: dict[str, Backbone]) -> None:
    net = built[arch].eval()
    ref = torchvision.models.get_model(arch, num_classes=7).eval()
    ref.load_state_dict(net.state_dict())  # same parameter names
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))


def test_vit_matches_torchvision(built: dict[str, Backbone]) -> None:
    net = built["vit_tiny"].eval()
    ref = VisionTransformer(32, 4, 4, 3, 192, 768, num_classes=7).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))
        feats = net.forward_features(x)
    # Layout (B, D, T): class token first, D = hidden width, T = 1 + 8*8 patches.
    assert feats.shape == (2, 192, 65)


def _n_params(m: nn.Module, skip_head: bool = True) -> int:
    head = {id(p) for p in m.fc.parameters()} if skip_head else set()
    return sum(p.numel() for p in m.parameters() if id(p) not in head)


@pytest.mark.parametrize(
    ("depth", "k", "millions"),
    # Zagoruyko & Komodakis (2016) Table: WRN-28-10 36.5M; FixMatch / USB report WRN-28-2
    # 1.5M and WRN-28-8 23.4M (CIFAR-100). Heads excluded, so compare with a tolerance.
    [(28, 2, 1.47), (28, 8, 23.4), (28, 10, 36.5)],
)
def test_wrn_parameter_counts_match_published(depth: int, k: int, millions: float) -> None:
    with torch.device("meta"):
        net = WideResNet(num_classes=10, depth=depth, widen_factor=k)
    assert abs(_n_params(net) / 1e6 - millions) / millions < 0.02


def test_preact_resnet18_parameter_count() -> None:
    # Kuang Liu's CIFAR PreActResNet18: 11,171,146 parameters with a 10-way head and no final
    # BN; ours adds the final BN (2 * 512).
    with torch.device("meta"):
        net = PreActResNet(num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 11_171_146 + 1024


@pytest.mark.parametrize(
    ("factory", "sizes"),
    [
        (lambda: ResNetBackbone("resnet18", num_classes=3), [33, (50, 37), 7]),
        (
            lambda: ResNetBackbone(
                "resnet50", num_classes=3, replace_stride_with_dilation=[False, True, True]
            ),
            [45],
        ),
        (lambda: WideResNet(3, depth=10, widen_factor=1), [31, (9, 17)]),
        (lambda: PreActResNet(3, blocks=(1, 1, 1, 1), base_width=4), [17, (33, 8)]),
    ],
)
def test_feature_shape_formula_matches_forward(factory, sizes) -> None:
    net = factory().eval()
    for size in sizes:
        h, w = (size, size) if isinstance(size, int) else size
        with torch.no_grad():
            feats = net.forward_features(torch.randn(1, 3, h, w))
        assert net.feature_spatial_shape(size) == tuple(feats.shape[2:]), size


# ------------------------------------------------------------------ ViT specifics
def test_vit_cam_layer_is_where_patch_tokens_still_matter() -> None:
    vit = create_backbone("vit_tiny", num_classes=4).eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-initialises a fresh head
    x = torch.randn(1, 3, 32, 32)
    acts: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _i, out):
            out.retain_grad()
            acts[name] = out

        return hook

    h1 = vit.cam_module.register_forward_hook(keep("cam"))
    h2 = vit.encoder.register_forward_hook(keep("out"))
    try:
        vit(x)[0, 1].backward()
    finally:
        h1.remove()
        h2.remove()
    # At the encoder output only the class token feeds the head ...
    assert acts["out"].grad[:, 1:].abs().sum() == 0
    # ... at the CAM layer (input LayerNorm of the last block) patch tokens carry gradient.
    assert acts["cam"].grad[:, 1:].abs().sum() > 0


def test_vit_rejects_wrong_input_size_and_bad_config() -> None:
    vit = create_backbone("vit_tiny", num_classes=4)
    with pytest.raises(ValueError, match="Expected image size 32x32"):
        vit(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="Expected `patch_size` to divide"):
        ViTBackbone(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="Expected `num_heads` to divide"):
        ViTBackbone(image_size=32, patch_size=4, hidden_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="Expected 65 tokens"):
        vit.reshape_cam_activation(torch.randn(1, 64, 192))


# ------------------------------------------------------------------ pretrained weights path
@pytest.fixture
def fake_download(monkeypatch):
    """Replace the weights download with a state dict we control (no network)."""
    served: dict[str, dict] = {}

    def get_state_dict(self, *args, **kwargs):
        served["kwargs"] = kwargs
        return served["state"]

    monkeypatch.setattr(WeightsEnum, "get_state_dict", get_state_dict)
    return served


@pytest.mark.parametrize("num_classes", [1000, 5])
def test_resnet_weights_are_loaded_and_head_replaced(fake_download, num_classes: int) -> None:
    ref = torchvision.models.resnet18()
    fake_download["state"] = ref.state_dict()
    net = create_backbone("resnet18", num_classes=num_classes, weights="IMAGENET1K_V1")
    state = net.state_dict()
    for key, value in ref.state_dict().items():
        if key.startswith("fc.") and num_classes != 1000:
            continue
        torch.testing.assert_close(state[key], value, msg=key)
    assert net.fc.out_features == num_classes
    assert fake_download["kwargs"]["check_hash"] is True


def test_vit_weights_are_loaded_and_head_replaced(fake_download) -> None:
    cfg = {"image_size": 224, "patch_size": 16, "num_layers": 1, "num_heads": 2}
    ref = VisionTransformer(**cfg, hidden_dim=32, mlp_dim=64)
    fake_download["state"] = ref.state_dict()
    vit = ViTBackbone(
        num_classes=3, **cfg, hidden_dim=32, mlp_dim=64, weights="ViT_B_16_Weights.IMAGENET1K_V1"
    )
    state = vit.state_dict()
    for key, value in ref.state_dict().items():
        if not key.startswith("heads."):
            torch.testing.assert_close(state[key], value, msg=key)
    assert vit.heads.head.out_features == 3
    with pytest.raises(ValueError, match="Expected `image_size` 224"):
        ViTBackbone(image_size=32, patch_size=16, weights="ViT_B_16_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match="full torchvision weights name"):
        ViTBackbone(image_size=224, weights="IMAGENET1K_V1")


def test_registry_vit_b_16_accepts_short_weight_tags(fake_download, monkeypatch) -> None:
    from lico_lightning.models import _registry

    # Shrink the registered ViT-B/16 config (same patch size / image size) to keep it cheap.
    monkeypatch.setitem(_registry._VIT_B_16, "num_layers", 1)
    monkeypatch.setitem(_registry._VIT_B_16, "hidden_dim", 24)
    monkeypatch.setitem(_registry._VIT_B_16, "num_heads", 2)
    monkeypatch.setitem(_registry._VIT_B_16, "mlp_dim", 48)
    ref = VisionTransformer(224, 16, 1, 2, 24, 48)
    fake_download["state"] = ref.state_dict()
    vit = create_backbone("vit_b_16", num_classes=1000, weights="IMAGENET1K_V1")
    torch.testing.assert_close(vit.heads.head.weight, ref.heads.head.weight)
    torch.testing.assert_close(vit.encoder.pos_embedding, ref.encoder.pos_embedding)
    assert vit.image_size == 224 and vit.feature_shape(224) == (24, 197)


def test_weight_tags_resolve_and_bad_tags_list_choices() -> None:
    assert (
        resolve_torchvision_weights("vit_b_16", "IMAGENET1K_V1")
        is torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1
    )
    assert (
        resolve_torchvision_weights("resnet50", "DEFAULT")
        is torchvision.models.ResNet50_Weights.DEFAULT
    )
    assert resolve_torchvision_weights("resnet50", None) is None
    with pytest.raises(ValueError, match="IMAGENET1K_V2"):
        resolve_torchvision_weights("resnet50", "IMAGENET21K")


# ------------------------------------------------------------------ registry and errors
def test_unknown_backbone_lists_the_available_ones() -> None:
    with pytest.raises(
        ValueError, match=r"Expected a backbone name, but got 'wrn99'\. Available: .*wrn28_2"
    ):
        create_backbone("wrn99", num_classes=10)
    with pytest.raises(TypeError):
        create_backbone(3, num_classes=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        create_backbone("wrn28_2", num_classes=0)


def test_register_backbone(monkeypatch) -> None:
    from lico_lightning._registry import Registry
    from lico_lightning.models import _registry

    copy = Registry("backbone")
    for name in _registry.BACKBONES:
        copy.register(name, _registry.BACKBONES.get(name))
    monkeypatch.setattr(_registry, "BACKBONES", copy)
    register_backbone("wrn10_1", lambda num_classes, **kw: WideResNet(num_classes, 10, 1, **kw))
    assert "wrn10_1" in list_backbones()
    net = create_backbone("wrn10_1", num_classes=3, bn_momentum=0.01)
    assert net.bn.momentum == 0.01
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("wrn10_1", WideResNet)


def test_registry_kwargs_override_the_config() -> None:
    net = create_backbone("wrn28_2", num_classes=10, depth=10, in_channels=1)
    assert len(net.block1) == 1 and net.conv1.in_channels == 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: WideResNet(10, depth=27), "depth"),
        (lambda: WideResNet(10, bn_momentum=0.0), "bn_momentum"),
        (lambda: WideResNet(10, drop_rate=1.0), "drop_rate"),
        (lambda: PreActResNet(10, blocks=(2, 2, 2)), "blocks"),
        (lambda: ResNetBackbone("vgg16"), "arch"),
    ],
)
def test_bad_configs_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_inputs_raise_before_work() -> None:
    net = WideResNet(10, depth=10, widen_factor=1)
    with pytest.raises(ValueError, match="Expected `x` to have 4 dims"):
        net(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="positive ints"):
        net.feature_shape(0)
    with pytest.raises(TypeError, match="int or"):
        net.feature_shape("32")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["wrn28_2", "preact_resnet18", "resnet18", "vit_tiny"])
def test_wrong_channel_count_names_the_setting_that_fits(name) -> None:
    kwargs = {"depth": 10} if name == "wrn28_2" else {}
    net = create_backbone(name, num_classes=3, **kwargs)
    with pytest.raises(
        ValueError, match=r"Expected images with 3 channels .*in_channels=3.*but got 1.*channels: 3"
    ):
        net(torch.randn(1, 1, 32, 32))
