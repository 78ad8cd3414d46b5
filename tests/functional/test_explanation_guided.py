"""RRR and Grad-CAM-mask penalties against independent references: central finite differences
(float64) for the input-gradient penalty's value and parameter gradient, and hand-written
per-sample loops on a tiny CNN for the batched forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lico_lightning.functional import gradcam_mask_penalty, right_for_the_right_reasons_loss


class TinyCNN(nn.Module):
    """conv -> tanh (smooth, for finite differences) -> conv -> relu -> GAP -> linear."""

    def __init__(self, act: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1, stride=2)
        self.head = nn.Linear(5, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.act(self.conv1(x))))

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.head(fmap.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SmoothCNN(TinyCNN):
    """All-smooth variant (softplus features) for finite differences of the RRR penalty."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.conv2(self.act(self.conv1(x))))


def _setup(seed: int = 0, dtype=torch.float64, b: int = 3, size: int = 6):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmoothCNN().to(dtype)
    x = torch.randn(b, 3, size, size, generator=g, dtype=dtype)
    mask = torch.rand(b, size, size, generator=g) < 0.4
    y = torch.randint(0, 3, (b,), generator=g)
    return net, x, mask, y


def _fd_input_gradient(net: nn.Module, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of sum_k log p_nk w.r.t. every input entry, sample by sample."""
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for n in range(x.shape[0]):
            flat = x[n].reshape(-1)
            for d in range(flat.numel()):
                plus, minus = flat.clone(), flat.clone()
                plus[d] += h
                minus[d] -= h
                f_plus = F.log_softmax(net(plus.view(1, *x.shape[1:])), -1).sum()
                f_minus = F.log_softmax(net(minus.view(1, *x.shape[1:])), -1).sum()
                grad[n].view(-1)[d] = (f_plus - f_minus) / (2 * h)
    return grad


def _assert_gradients_match_finite_differences(
    penalty, params, samples: int, rtol: float, atol: float, h: float = 1e-6
) -> None:
    """``params``' ``.grad`` from one ``penalty().backward()`` vs central differences of
    ``penalty`` at ``samples`` evenly spaced entries of each parameter."""
    penalty().backward()
    for param in params:
        analytic = param.grad.reshape(-1)
        for i in range(0, param.numel(), max(1, param.numel() // samples)):
            flat = param.data.view(-1)
            flat[i] += h
            up = penalty().item()
            flat[i] -= 2 * h
            down = penalty().item()
            flat[i] += h
            assert analytic[i].item() == pytest.approx((up - down) / (2 * h), rel=rtol, abs=atol)


def test_rrr_value_equals_finite_difference_reference() -> None:
    net, x, mask, _ = _setup()
    xg = x.clone().requires_grad_(True)
    got = right_for_the_right_reasons_loss(net(xg), xg, mask, weight=2.5, reduction="none")
    fd = _fd_input_gradient(net, x)
    expected = 2.5 * (mask[:, None].double() * fd).square().flatten(1).sum(1)
    assert expected.abs().min() > 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    total = right_for_the_right_reasons_loss(net(xg), xg, mask, weight=2.5)
    torch.testing.assert_close(total, expected.sum(), rtol=1e-6, atol=1e-9)
    mean = right_for_the_right_reasons_loss(net(xg), xg, mask, weight=2.5, reduction="mean")
    torch.testing.assert_close(mean, expected.mean(), rtol=1e-6, atol=1e-9)


def test_rrr_parameter_gradient_equals_finite_differences() -> None:
    """The double backward (create_graph=True) trains: d penalty / d theta by central differences."""
    net, x, mask, _ = _setup(seed=1, b=2, size=4)

    def penalty() -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        return right_for_the_right_reasons_loss(net(xg), xg, mask, weight=3.0)

    _assert_gradients_match_finite_differences(
        penalty,
        (net.conv1.weight, net.conv2.bias, net.head.weight),
        samples=5,
        rtol=1e-5,
        atol=1e-9,
    )


def test_rrr_channel_mask_and_broadcast_mask_agree() -> None:
    net, x, mask, _ = _setup(seed=2)
    xg = x.clone().requires_grad_(True)
    a = right_for_the_right_reasons_loss(net(xg), xg, mask)
    b = right_for_the_right_reasons_loss(net(xg), xg, mask[:, None].expand(-1, 3, -1, -1))
    torch.testing.assert_close(a, b)


def _rrr_loop(net: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One sample at a time, the gradient by autograd on that sample alone."""
    rows = []
    for n in range(x.shape[0]):
        xn = x[n : n + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.log_softmax(net(xn), -1).sum(), xn, create_graph=True)
        rows.append((mask[n].float() * g[0]).square().sum())
    return torch.stack(rows)


def _gradcam_loop(
    net: TinyCNN, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Grad-CAM written out per sample: mean gradient weights, ReLU, bilinear up, max-normalise."""
    rows = []
    for n in range(x.shape[0]):
        fmap = net.forward_features(x[n : n + 1])  # (1, N, h, w)
        score = net.forward_head(fmap)[0, y[n]]
        (g,) = torch.autograd.grad(score, fmap, create_graph=True)
        alpha = g[0].mean(dim=(1, 2))  # (N,)
        cam = torch.relu((alpha[:, None, None] * fmap[0]).sum(0))  # (h, w)
        cam = F.interpolate(
            cam[None, None], size=mask.shape[-2:], mode="bilinear", align_corners=False
        )[0, 0]
        cam = cam / (cam.max() + eps)
        rows.append((mask[n].float() * cam).square().sum())
    return torch.stack(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_rrr_equals_per_sample_loop_value_and_gradient(dtype) -> None:
    net, x, mask, _ = _setup(seed=3, dtype=dtype, b=4, size=8)
    xg = x.clone().requires_grad_(True)
    got = right_for_the_right_reasons_loss(net(xg), xg, mask, weight=1.0, reduction="none")
    ref = _rrr_loop(net, x, mask)
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, ref, **tol)
    grads = torch.autograd.grad(got.sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad(ref.sum(), list(net.parameters()))
    # float32: second-order gradients sum cancelling terms in another order (float64 is exact)
    gtol = {"rtol": 1e-3, "atol": 1e-5} if dtype == torch.float32 else {}
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, **gtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_gradcam_penalty_equals_per_sample_loop_value_and_gradient(dtype) -> None:
    torch.manual_seed(4)
    net = TinyCNN().to(dtype)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.tensor([0, 1, 2, 1])
    mask = torch.rand(4, 8, 8, generator=g) < 0.5
    fmap = net.forward_features(x)
    got = gradcam_mask_penalty(net.forward_head(fmap), fmap, y, mask, weight=1.0, reduction="none")
    ref = _gradcam_loop(net, x, y, mask)
    assert ref.abs().min() > 0
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, ref, **tol)
    # the head's bias does not enter the Grad-CAM (d score / d fmap does not depend on it)
    params = [p for name, p in net.named_parameters() if name != "head.bias"]
    grads = torch.autograd.grad(got.sum(), params)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    # float32: second-order gradients sum cancelling terms in another order (float64 is exact)
    gtol = {"rtol": 1e-3, "atol": 1e-5} if dtype == torch.float32 else {}
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, **gtol)
    # the head's gradient depends on the double backward through the Grad-CAM weights alone:
    # the feature map does not depend on the head, the weights alpha do
    assert grads[-1].abs().sum() > 0


def test_gradcam_parameter_gradient_equals_finite_differences() -> None:
    torch.manual_seed(5)
    net = TinyCNN().double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 0])
    mask = torch.rand(2, 6, 6, generator=g) < 0.5

    def penalty() -> torch.Tensor:
        fmap = net.forward_features(x)
        return gradcam_mask_penalty(net.forward_head(fmap), fmap, y, mask, weight=2.0)

    _assert_gradients_match_finite_differences(
        penalty, (net.head.weight, net.conv2.weight), samples=6, rtol=1e-4, atol=1e-8
    )


def test_penalties_are_zero_without_mask_and_the_normalised_map_is_at_most_one() -> None:
    net, x, mask, y = _setup(seed=6)
    xg = x.clone().requires_grad_(True)
    none = torch.zeros_like(mask)
    assert right_for_the_right_reasons_loss(net(xg), xg, none).item() == 0.0
    fmap = net.forward_features(x)
    full = torch.ones_like(mask)
    value = gradcam_mask_penalty(net.forward_head(fmap), fmap, y, full, reduction="none")
    assert bool((value <= mask[0].numel() + 1e-9).all()) and bool((value > 0).all())


def test_masks_and_frozen_layers_get_no_gradient() -> None:
    net, x, mask, y = _setup(seed=7)
    net.conv1.requires_grad_(False)
    soft = mask.double().requires_grad_(True)  # a float mask that could be trained ...
    xg = x.clone().requires_grad_(True)
    loss = right_for_the_right_reasons_loss(net(xg), xg, soft)
    fmap = net.forward_features(x)
    loss = loss + gradcam_mask_penalty(net.forward_head(fmap), fmap, y, soft)
    loss.backward()
    assert soft.grad is None  # ... is detached
    assert net.conv1.weight.grad is None and net.conv1.bias.grad is None
    assert net.conv2.weight.grad.abs().sum() > 0


def test_bad_inputs_are_rejected_before_work() -> None:
    net, x, mask, y = _setup()
    with pytest.raises(ValueError, match="requires_grad"):
        right_for_the_right_reasons_loss(net(x), x, mask)
    xg = x.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="Expected `mask` of shape"):
        right_for_the_right_reasons_loss(net(xg), xg, mask[:, :3])
    with pytest.raises(ValueError, match="Expected `reduction`"):
        right_for_the_right_reasons_loss(net(xg), xg, mask, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        right_for_the_right_reasons_loss(net(xg), xg, mask, weight=-1.0)
    with torch.no_grad():
        frozen_logits = net(xg)
    with pytest.raises(ValueError, match="do not require grad"):
        right_for_the_right_reasons_loss(frozen_logits, xg, mask)
    fmap = net.forward_features(x)
    with pytest.raises(ValueError, match="long `targets`"):
        gradcam_mask_penalty(net.forward_head(fmap), fmap, y.float(), mask)
    with pytest.raises(ValueError, match="Expected `mask` of shape"):
        gradcam_mask_penalty(net.forward_head(fmap), fmap, y, mask[:2])
