"""Explainers vs independent hand-written references, and their training-safety guarantees."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lico_lightning.explain import (
    RISE,
    Explainer,
    GradCAM,
    GradCAMPlusPlus,
    ScoreCAM,
    ViTReshape,
    build_explainers,
    create_explainer,
    list_explainers,
)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    # non-trivial BN statistics so that eval mode differs from train mode
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


class SmallNet(nn.Module):
    """Conv-BN-ReLU-Dropout x2 + head: BN statistics and dropout make mode changes visible."""

    def __init__(self, num_classes: int = 5, width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.features = nn.Sequential(
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)
        )
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.features(self.layer1(self.stem(x)))
        return self.fc(self.drop(x.mean((2, 3))))


@pytest.fixture
def small() -> nn.Module:
    torch.manual_seed(0)
    net = SmallNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return torch.where(hi > lo, (flat - lo) / (hi - lo), torch.zeros_like(flat)).view_as(x)


def reference_cam(model, layer, images, target, plusplus=False, reshape=None):
    """Textbook Grad-CAM / Grad-CAM++ with .backward() and a tensor hook on a deep copy."""
    m = copy.deepcopy(model).eval()
    store = {}

    def hook(mod, inp, out):
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    m.get_submodule(layer).register_forward_hook(hook)
    logits = m(images.clone().requires_grad_(True))
    logits[torch.arange(len(target)), target].sum().backward()
    a, g = store["a"].detach(), store["g"]
    if reshape is not None:
        a, g = reshape(a), reshape(g)
    if plusplus:  # Chattopadhyay et al. eq. 19 (pytorch-grad-cam's form without its eps)
        g2, g3 = g.double() ** 2, g.double() ** 3
        aij = g2 / (2 * g2 + a.double().sum((2, 3), keepdim=True) * g3)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij)).float()
        w = (F.relu(g) * aij).sum((2, 3))
    else:
        w = g.mean((2, 3))
    cam = F.relu((w[:, :, None, None] * a).sum(1))
    cam = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[
        :, 0
    ]
    return _minmax(cam)


@pytest.mark.parametrize("cls,plusplus", [(GradCAM, False), (GradCAMPlusPlus, True)])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_gradcam_matches_reference_on_resnet18(resnet, cls, plusplus, layer):
    images = torch.randn(3, 3, 80, 80)
    target = torch.tensor([0, 4, 2])
    out = cls(resnet, layer).attribute(images, target)
    ref = reference_cam(resnet, layer, images, target, plusplus)
    assert out.shape == (3, 80, 80)
    assert (ref.flatten(1).amax(1) == 1).all()  # non-degenerate maps
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-3)


def test_gradcam_layer_given_as_module_and_inferred(resnet):
    images, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    by_module = GradCAM(resnet, resnet.layer4).attribute(images, target)
    inferred = GradCAM(resnet)
    out = inferred.attribute(images, target)
    assert inferred.layer_name == "layer4"
    torch.testing.assert_close(out, by_module)


def _naive_scorecam(model, layer, images, target):
    """Authors' Score-CAM loop, one image and one channel at a time."""
    m = copy.deepcopy(model).eval()
    store = {}
    m.get_submodule(layer).register_forward_hook(
        lambda mod, i, o: store.__setitem__("a", o.detach())
    )
    maps = []
    with torch.no_grad():
        for b in range(images.shape[0]):
            x = images[b : b + 1]
            m(x)
            acts = store["a"][0]
            total = torch.zeros(images.shape[-2:])
            for k in range(acts.shape[0]):
                up = F.interpolate(
                    acts[k][None, None],
                    size=images.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )[0, 0]
                if up.max() == up.min():
                    continue
                norm = (up - up.min()) / (up.max() - up.min())
                score = m(x * norm).softmax(-1)[0, target[b]]
                total += score * up
            maps.append(F.relu(total))
    return _minmax(torch.stack(maps))


def test_scorecam_matches_naive_and_batched_equals_single(small):
    images, target = torch.randn(3, 3, 16, 16), torch.tensor([2, 0, 4])
    batched = ScoreCAM(small, "features", batch_size=300).attribute(images, target)
    single = ScoreCAM(small, "features", batch_size=1).attribute(images, target)
    odd = ScoreCAM(small, "features", batch_size=5).attribute(images, target)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, odd, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        batched, _naive_scorecam(small, "features", images, target), atol=1e-4, rtol=1e-3
    )


def _naive_rise(model, images, target, explainer: RISE):
    """One masked image at a time, with the explainer's own seeded masks."""
    from lico_lightning.functional.cam import draw_rise_parameters, rise_masks

    h, w = images.shape[-2:]
    gen = torch.Generator().manual_seed(explainer.seed)
    grids, shifts = draw_rise_parameters(
        explainer.num_masks, explainer.grid_size, explainer.probability, (h, w), gen
    )
    masks = rise_masks(grids, shifts, (h, w))
    out = torch.zeros(images.shape[0], h, w)
    with torch.no_grad():
        for b in range(images.shape[0]):
            for i in range(explainer.num_masks):
                p = model(images[b : b + 1] * masks[i]).softmax(-1)[0, target[b]]
                out[b] += p * masks[i]
    return out / (explainer.num_masks * explainer.probability)


def test_rise_batched_equals_single_and_naive():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)
    ).eval()
    images, target = torch.randn(3, 3, 12, 12), torch.tensor([0, 1, 2])
    kw = dict(num_masks=50, grid_size=4, seed=7, normalize=False)
    batched = RISE(net, batch_size=64, **kw).attribute(images, target)
    single = RISE(net, batch_size=1, **kw).attribute(images, target)
    odd = RISE(net, batch_size=7, **kw).attribute(images, target)
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batched, odd, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        batched, _naive_rise(net, images, target, RISE(net, **kw)), atol=1e-6, rtol=1e-5
    )
    other_seed = RISE(net, batch_size=64, **{**kw, "seed": 8}).attribute(images, target)
    assert not torch.allclose(batched, other_seed)


# ------------------------------------------------------------------ training safety
ALL = [
    ("gradcam", {"layer": "features"}),
    ("gradcampp", {"layer": "features"}),
    ("scorecam", {"layer": "features", "batch_size": 512}),
    ("rise", {"num_masks": 16, "grid_size": 3, "batch_size": 32}),
]


def test_registry_lists_every_method():
    assert {name for name, _ in ALL} == set(list_explainers())


@pytest.mark.parametrize("name,kwargs", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_rejected_before_any_work(small, name, kwargs, bad):
    calls = []
    small.register_forward_hook(lambda *a: calls.append(1))
    images = torch.randn(2, 3, 16, 16)
    images[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"Expected `images` to be finite.*1 non-finite"):
        create_explainer(name, small, **kwargs).attribute(images, torch.tensor([0, 1]))
    assert calls == []  # no forward pass ran


def test_misspelt_option_lists_the_options_that_exist(small):
    with pytest.raises(
        ValueError,
        match=r"options of the 'rise' explainer among \[.*'num_masks'.*\], but got 'num_maskz'",
    ):
        create_explainer("rise", small, num_maskz=5)
    with pytest.raises(
        ValueError, match=r"'gradcam' explainer among \[.*'layer'.*\], but got 'layr'"
    ):
        build_explainers(small, ["gradcam"], explainer_kwargs={"gradcam": {"layr": "features"}})
    with pytest.raises(ValueError, match=r"'scorecam'.*'batch_size'.*but got 'batchsize'"):
        build_explainers(small, ["scorecam"], explainer_kwargs={"scorecam": {"batchsize": 4}})


def test_rise_grid_larger_than_the_image_is_rejected(small):
    with pytest.raises(ValueError, match=r"`grid_size` <= the image side 8.*grid_size=9"):
        RISE(small, num_masks=4, grid_size=9).attribute(torch.randn(1, 3, 8, 8), torch.tensor([0]))
    out = RISE(small, num_masks=4, grid_size=8).attribute(
        torch.randn(1, 3, 8, 8), torch.tensor([0])
    )
    assert out.shape == (1, 8, 8)


@pytest.mark.parametrize("name,kwargs", ALL)
def test_explainer_leaves_model_untouched(small, name, kwargs):
    model = small.train()
    model.layer1.eval()  # a mixed mode state must come back module by module
    model.stem[0].weight.requires_grad_(False)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
    model.fc.weight.grad = None
    state = copy.deepcopy(model.state_dict())
    modes = {n: m.training for n, m in model.named_modules()}
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    images, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    rng = torch.get_rng_state()

    explainer = create_explainer(name, model, **kwargs)
    out = explainer.attribute(images, target)

    assert out.shape == (2, 16, 16) and torch.isfinite(out).all()
    assert torch.equal(torch.get_rng_state(), rng)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    assert model.stem[0].weight.requires_grad is False and model.stem[0].weight.grad is None
    assert model.fc.weight.grad is None
    for n, p in model.named_parameters():
        if p.requires_grad and n != "fc.weight":
            assert torch.equal(p.grad, torch.full_like(p, 0.5)), n
    for k, v in model.state_dict().items():  # BN running stats not updated
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("name,kwargs", ALL)
def test_explainer_works_under_inference_mode(small, name, kwargs):
    images, target = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    expected = create_explainer(name, small, **kwargs).attribute(images, target)
    with torch.inference_mode():
        inf_images, inf_target = images.clone(), target.clone()
        out = create_explainer(name, small, **kwargs).attribute(inf_images, inf_target)
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(out, expected)


def test_frozen_model_still_explained(small):
    model = copy.deepcopy(small)
    model.requires_grad_(False)
    images, target = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    out = GradCAM(model, "features").attribute(images, target)
    torch.testing.assert_close(out, GradCAM(small, "features").attribute(images, target))
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name,kwargs", ALL)
def test_hooks_and_modes_restored_on_error(small, name, kwargs):
    model = small.train()
    explainer = create_explainer(name, model, **kwargs)
    with pytest.raises(ValueError, match="target"):
        explainer.attribute(torch.randn(2, 3, 16, 16), torch.tensor([0, 5]))
    assert model.training and all(m.training for m in model.modules())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert torch.is_grad_enabled()


def test_bad_input_errors(small):
    x1, x2 = torch.randn(1, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="submodule"):
        GradCAM(small, "layer9")
    with pytest.raises(ValueError, match="feature map"):
        GradCAM(small, "fc").attribute(x1, torch.tensor([0]))
    with pytest.raises(ValueError, match="target"):
        ScoreCAM(small, "features").attribute(x1, torch.tensor([7]))
    with pytest.raises(TypeError, match=r"torch\.long"):
        GradCAM(small, "features").attribute(x1, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="Expected `target` of shape"):
        GradCAM(small, "features").attribute(x2, torch.tensor([0]))
    with pytest.raises(ValueError, match="Available"):
        create_explainer("gradcam2", small)
    with pytest.raises(ValueError, match="batch_size"):
        ScoreCAM(small, "features", batch_size=0)


# ------------------------------------------------------------------ ViT
def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=4,
    )


def test_vit_gradcam_with_token_reshape_matches_reference():
    vit = _tiny_vit()
    images, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    layer = "encoder.layers.encoder_layer_0"
    reshape = ViTReshape(num_prefix_tokens=1)
    out = GradCAM(vit, layer, reshape=reshape).attribute(images, target)
    torch.testing.assert_close(
        out, reference_cam(vit, layer, images, target, reshape=reshape), atol=2e-4, rtol=1e-3
    )
    with pytest.raises(ValueError, match="ViTReshape"):
        GradCAM(vit, layer).attribute(images, target)
    with pytest.raises(ValueError, match="square"):
        GradCAM(vit, layer, reshape=ViTReshape(num_prefix_tokens=0)).attribute(images, target)


def test_custom_explainer_joins_the_interface():
    class Saliency(Explainer):
        uses_layer = False

        def _attribute(self, images, target):
            x = images.requires_grad_(True)
            with torch.enable_grad():
                score = self.model(x).gather(1, target[:, None]).sum()
                (g,) = torch.autograd.grad(score, x)
            return g.abs().amax(1)

    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    out = Saliency(net).attribute(torch.randn(2, 3, 2, 2), torch.tensor([0, 1]))
    assert out.shape == (2, 2, 2) and net[1].weight.grad is None


def test_declared_default_layer_and_reshape_of_a_wrapped_backbone():
    class Backbone(nn.Module):  # the lico_lightning.models interface: cam_layer + reshape
        def __init__(self):
            super().__init__()
            self.vit = _tiny_vit()
            self.cam_layer = "vit.encoder.layers.encoder_layer_0"
            self.reshaped = 0

        def forward(self, x):
            return self.vit(x)

        def reshape_cam_activation(self, tokens):
            self.reshaped += 1
            return ViTReshape(num_prefix_tokens=1)(tokens)

    class Wrapper(nn.Module):  # e.g. a LightningModule holding the backbone
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()

        def forward(self, x):
            return self.backbone(x)

    model = Wrapper()
    images, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    explainer = GradCAM(model)
    out = explainer.attribute(images, target)
    assert explainer.layer_name == "backbone.vit.encoder.layers.encoder_layer_0"
    assert model.backbone.reshaped > 0
    ref = GradCAM(
        model.backbone.vit, "encoder.layers.encoder_layer_0", reshape=ViTReshape()
    ).attribute(images, target)
    torch.testing.assert_close(out, ref)
