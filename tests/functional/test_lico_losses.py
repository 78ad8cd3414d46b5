"""LICO losses (math layer) against independent references.

* manifold matching: a literal double/triple Python loop over eqs. 1-2;
* OT: POT's per-sample ``ot.sinkhorn2`` / ``ot.sinkhorn`` (method="sinkhorn_log"), finite
  differences of the regularised objective, and autograd through a naive unrolled log-Sinkhorn.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from lico_lightning.functional import (
    SinkhornConvergenceWarning,
    manifold_matching_loss,
    sinkhorn_ot_loss,
)


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------
def naive_manifold_matching(f, g, tau, distance, normalize, exclude_diagonal):
    """Eqs. 1-2 written out with Python loops over i, j, s (float64 scalars)."""
    f = f.detach().double().flatten(1)
    g = g.detach().double().flatten(1)
    b = f.shape[0]

    def dist(x, y):
        if normalize or distance == "cosine":
            x, y = x / x.norm(), y / y.norm()
        if distance == "euclidean":
            return math.sqrt(sum((float(xi) - float(yi)) ** 2 for xi, yi in zip(x, y)))
        cos = sum(float(xi) * float(yi) for xi, yi in zip(x, y))
        return 1.0 - cos

    def adjacency(x):
        a = [[0.0] * b for _ in range(b)]
        for i in range(b):
            others = [s for s in range(b) if not (exclude_diagonal and s == i)]
            denom = sum(math.exp(-dist(x[i], x[s]) / tau) for s in others)
            for j in others:
                a[i][j] = math.exp(-dist(x[i], x[j]) / tau) / denom
        return a

    a_f, a_g = adjacency(f), adjacency(g)
    kl = []
    for i in range(b):
        total = 0.0
        for j in range(b):
            if exclude_diagonal and i == j:
                continue
            total += a_g[i][j] * math.log(a_g[i][j] / a_f[i][j])
        kl.append(total)
    return torch.tensor(kl, dtype=torch.float64)


def np_cost(x, y):
    """Cosine cost 1 - cos computed in numpy (independent of the code under test)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return 1.0 - xn @ yn.T


def regularised_value(x, y, eps, a=None, b=None):
    """OT_eps = <T*, C> + eps * sum T* log T* with POT's non-batched log solver (float64)."""
    cost = np_cost(x, y)
    n, m = cost.shape
    a = np.full(n, 1.0 / n) if a is None else a
    b = np.full(m, 1.0 / m) if b is None else b
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-15)
    return float((plan * cost).sum() + eps * (plan * np.log(plan)).sum())


def naive_unrolled_log_sinkhorn(x, y, eps, iters):
    """Regularised objective through `iters` unrolled log-domain Sinkhorn steps (autograd)."""
    xn = x / x.norm(dim=1, keepdim=True)
    yn = y / y.norm(dim=1, keepdim=True)
    cost = 1.0 - xn @ yn.T
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=x.dtype)
    log_b = torch.full((m,), -math.log(m), dtype=x.dtype)
    fpot = torch.zeros(n, dtype=x.dtype)
    gpot = torch.zeros(m, dtype=x.dtype)
    for _ in range(iters):
        fpot = eps * log_a - eps * torch.logsumexp((gpot[None, :] - cost) / eps, dim=1)
        gpot = eps * log_b - eps * torch.logsumexp((fpot[:, None] - cost) / eps, dim=0)
    log_t = (fpot[:, None] + gpot[None, :] - cost) / eps
    plan = log_t.exp()
    return (plan * cost).sum() + eps * (plan * log_t).sum()


# --------------------------------------------------------------------------------------------
# manifold matching
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("exclude_diagonal", [True, False])
def test_mm_matches_naive_loop(distance, normalize, exclude_diagonal):
    f = torch.randn(5, 3, 4, dtype=torch.float64)
    g = torch.randn(5, 2, 3, dtype=torch.float64)
    tau = 0.4 if (normalize or distance == "cosine") else 2.0
    expected = naive_manifold_matching(f, g, tau, distance, normalize, exclude_diagonal)
    kwargs = dict(distance=distance, normalize=normalize, exclude_diagonal=exclude_diagonal)
    got = manifold_matching_loss(f, g, tau, reduction="none", **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(manifold_matching_loss(f, g, tau, **kwargs), expected.mean())
    torch.testing.assert_close(
        manifold_matching_loss(f, g, tau, reduction="sum", **kwargs), expected.sum()
    )


def test_mm_matches_naive_loop_with_duplicated_prompts_float32():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    prompts = torch.randn(3, 4, 5)
    g = prompts[labels]  # identical G rows for the same class -> D^G = 0 off the diagonal
    f = torch.randn(6, 8, 5)
    for exclude in (True, False):
        expected = naive_manifold_matching(f, g, 3.0, "euclidean", False, exclude)
        got = manifold_matching_loss(f, g, 3.0, reduction="none", exclude_diagonal=exclude)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("exclude_diagonal", [True, False])
def test_mm_zero_iff_same_adjacency(exclude_diagonal):
    f = torch.randn(6, 4, 3, dtype=torch.float64)
    # A rotation + translation keeps every Euclidean distance: identical adjacency, loss 0,
    # even though F and G live in different coordinates (and different sizes).
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    g = f.flatten(1) @ q + 3.0
    zero = manifold_matching_loss(f, g, 1.5, exclude_diagonal=exclude_diagonal, reduction="none")
    torch.testing.assert_close(zero, torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    other = manifold_matching_loss(
        f,
        torch.randn(6, 5, dtype=torch.float64),
        1.5,
        exclude_diagonal=exclude_diagonal,
        reduction="none",
    )
    assert (other > 0).all()  # KL >= 0, > 0 for a different manifold


def test_mm_gradcheck_all_inputs():
    f = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    for distance in ("euclidean", "cosine"):
        assert torch.autograd.gradcheck(
            lambda a, b, t, d=distance: manifold_matching_loss(a, b, t, distance=d), (f, g, tau)
        )


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("exclude_diagonal", [True, False])
def test_mm_grads_finite_with_zero_distances(normalize, exclude_diagonal):
    # Diagonal distances are exactly 0, duplicated rows give 0 off the diagonal too, and a zero
    # row has no direction: none of these may produce NaN/Inf gradients.
    f = torch.randn(5, 6)
    f[1] = f[0]
    f[4] = 0.0
    f.requires_grad_(True)
    g = torch.randn(3, 6)[torch.tensor([0, 0, 1, 2, 1])].requires_grad_(True)
    tau = torch.tensor(0.5, requires_grad=True)
    loss = manifold_matching_loss(f, g, tau, normalize=normalize, exclude_diagonal=exclude_diagonal)
    loss.backward()
    assert torch.isfinite(loss)
    for t in (f, g, tau):
        assert torch.isfinite(t.grad).all()
    assert f.grad.abs().sum() > 0


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_mm_bf16_autocast(distance):
    f32 = torch.randn(8, 16, 9)
    g32 = torch.randn(8, 4, 9)
    f = f32.bfloat16().requires_grad_(True)
    g = g32.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = manifold_matching_loss(f, g, 0.1, distance=distance, normalize=True)
    assert loss.dtype == torch.float32
    loss.backward()
    assert f.grad.dtype == torch.bfloat16 and torch.isfinite(f.grad.float()).all()
    assert torch.isfinite(g.grad.float()).all()
    # computed in float32 from the rounded inputs: same value as the float32 path
    ref = manifold_matching_loss(
        f.detach().float(), g.detach().float(), 0.1, distance=distance, normalize=True
    )
    torch.testing.assert_close(loss.detach(), ref)


def test_mm_input_errors():
    f, g = torch.randn(4, 3), torch.randn(4, 2)
    with pytest.raises(ValueError, match="same batch size"):
        manifold_matching_loss(f, torch.randn(3, 2), 0.1)
    with pytest.raises(ValueError, match=r"at least B = 2.*no neighbours"):
        manifold_matching_loss(f[:1], g[:1], 0.1)
    with pytest.raises(ValueError, match="non-empty"):
        manifold_matching_loss(torch.randn(0, 3), torch.randn(0, 2), 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        manifold_matching_loss(torch.randn(4), torch.randn(4), 0.1)
    bad = f.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="`image_features` to be finite"):
        manifold_matching_loss(bad, g, 0.1)
    with pytest.raises(ValueError, match="`text_features` to be finite"):
        manifold_matching_loss(f, g / 0.0, 0.1)
    for tau in (0.0, -1.0, torch.tensor(0.0), torch.tensor(-0.5)):
        with pytest.raises(ValueError, match="`temperature` > 0"):
            manifold_matching_loss(f, g, tau)
    with pytest.raises(ValueError, match="`temperature` to be finite"):
        manifold_matching_loss(f, g, float("inf"))
    with pytest.raises(ValueError, match="`temperature` to be finite"):
        manifold_matching_loss(f, g, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="0-dim"):
        manifold_matching_loss(f, g, torch.ones(2))
    with pytest.raises(TypeError, match="float or a tensor"):
        manifold_matching_loss(f, g, "0.1")
    with pytest.raises(ValueError, match=r"\['cosine', 'euclidean'\].*'manhattan'"):
        manifold_matching_loss(f, g, 0.1, distance="manhattan")
    with pytest.raises(ValueError, match="reduction"):
        manifold_matching_loss(f, g, 0.1, reduction="avg")
    with pytest.raises(TypeError, match="floating-point"):
        manifold_matching_loss(torch.ones(4, 3, dtype=torch.long), g, 0.1)


# --------------------------------------------------------------------------------------------
# optimal transport
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("b", "n", "m", "width", "eps"),
    [
        (3, 5, 5, 4, 0.1),
        (2, 7, 3, 6, 0.05),
        (4, 3, 9, 5, 0.1),
        (2, 128, 14, 64, 0.1),
        (1, 1, 4, 3, 0.2),
    ],
)
def test_ot_matches_pot_sinkhorn2_per_sample(b, n, m, width, eps):
    x = torch.randn(b, n, width, dtype=torch.float64)
    y = torch.randn(b, m, width, dtype=torch.float64)
    got, plan = sinkhorn_ot_loss(
        x, y, epsilon=eps, max_iter=5000, tol=1e-12, reduction="none", return_plan=True
    )
    a, bb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    for i in range(b):
        cost = np_cost(x[i].numpy(), y[i].numpy())
        ref = ot.sinkhorn2(a, bb, cost, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-13)
        ref_plan = ot.sinkhorn(
            a, bb, cost, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-13
        )
        assert abs(float(got[i]) - float(ref)) <= 1e-10
        np.testing.assert_allclose(plan[i].numpy(), ref_plan, atol=1e-10)
    # float32 (the training path) stays within 1e-5 of the float64 reference
    got32 = sinkhorn_ot_loss(
        x.float(), y.float(), epsilon=eps, max_iter=5000, tol=1e-5, reduction="none"
    )
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), got, atol=1e-5, rtol=0)
    mean = sinkhorn_ot_loss(x, y, epsilon=eps, max_iter=5000, tol=1e-12)
    torch.testing.assert_close(mean, got.mean())


def test_ot_weights_match_pot():
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    y = torch.randn(3, 4, 5, dtype=torch.float64)
    u = torch.rand(3, 6, dtype=torch.float64) + 0.1  # unnormalised on purpose
    v = torch.rand(4, dtype=torch.float64) + 0.1  # shared by the batch
    got, plan = sinkhorn_ot_loss(
        x,
        y,
        0.1,
        max_iter=5000,
        tol=1e-12,
        image_weights=u,
        text_weights=v,
        reduction="none",
        return_plan=True,
    )
    vn = (v / v.sum()).numpy()
    for i in range(3):
        un = (u[i] / u[i].sum()).numpy()
        ref = ot.sinkhorn2(
            un,
            vn,
            np_cost(x[i], y[i]),
            0.1,
            method="sinkhorn_log",
            numItermax=100000,
            stopThr=1e-14,
        )
        assert abs(float(got[i]) - float(ref)) <= 1e-10
        np.testing.assert_allclose(plan[i].sum(1).numpy(), un, atol=1e-10)
        np.testing.assert_allclose(plan[i].sum(0).numpy(), vn, atol=1e-10)


def test_ot_plan_marginals_float32():
    x, y = torch.randn(8, 20, 16), torch.randn(8, 7, 16)
    _, plan = sinkhorn_ot_loss(x, y, 0.05, max_iter=500, return_plan=True)
    # one marginal is exact after the last half-step, the other within tol (L2) = 1e-5
    torch.testing.assert_close(plan.sum(2), torch.full((8, 20), 1 / 20), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((8, 7), 1 / 7), atol=1e-5, rtol=0)
    assert not plan.requires_grad


@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_ot_gradient_is_envelope_gradient_of_regularised_objective(eps):
    x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    loss = sinkhorn_ot_loss(x, y, eps, max_iter=5000, tol=1e-13, reduction="sum")
    gx, gy = torch.autograd.grad(loss, (x, y))
    dx, dy = torch.randn_like(x), torch.randn_like(y)
    h = 1e-5

    def total(fn, sx, sy):
        return sum(fn(x[i].detach() + sx * dx[i], y[i].detach() + sy * dy[i]) for i in range(2))

    def reg(a, b):
        return regularised_value(a.numpy(), b.numpy(), eps)

    def linear(a, b):
        cost = np_cost(a.numpy(), b.numpy())
        n, m = cost.shape
        return float(
            ot.sinkhorn2(
                np.full(n, 1 / n),
                np.full(m, 1 / m),
                cost,
                eps,
                method="sinkhorn_log",
                numItermax=100000,
                stopThr=1e-15,
            )
        )

    ours = float((gx * dx).sum() + (gy * dy).sum())
    fd_reg = (total(reg, h, h) - total(reg, -h, -h)) / (2 * h)
    assert abs(ours - fd_reg) <= 1e-6 * max(1.0, abs(fd_reg))
    if eps == 0.5:
        # documented: it is NOT the derivative of the returned transport cost <T*(C), C>
        fd_lin = (total(linear, h, h) - total(linear, -h, -h)) / (2 * h)
        assert abs(ours - fd_lin) > 1e-3

    # and it equals autograd through a naive unrolled log-Sinkhorn run to convergence
    xs = x.detach()[0].clone().requires_grad_(True)
    ys = y.detach()[0].clone().requires_grad_(True)
    ref_gx, ref_gy = torch.autograd.grad(naive_unrolled_log_sinkhorn(xs, ys, eps, 300), (xs, ys))
    torch.testing.assert_close(gx[0], ref_gx, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(gy[0], ref_gy, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("eps", [1e-1, 1e-2, 1e-3])
def test_ot_grads_finite_small_epsilon(eps):
    x = torch.randn(4, 32, 16, requires_grad=True)
    y = torch.randn(4, 6, 16, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        loss = sinkhorn_ot_loss(x, y, eps, max_iter=50)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.1, 1e-3])
def test_ot_bf16_autocast(eps):
    x = torch.randn(4, 32, 16).bfloat16().requires_grad_(True)
    y = torch.randn(4, 6, 16).bfloat16().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sinkhorn_ot_loss(x, y, eps, max_iter=50)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.isfinite(x.grad.float()).all() and torch.isfinite(y.grad.float()).all()
    assert x.grad.float().abs().sum() > 0


def test_ot_zero_token_rows_have_finite_zero_gradient():
    x = torch.randn(2, 5, 4)
    x[0, 2] = 0.0  # e.g. a dead ReLU feature map
    x.requires_grad_(True)
    y = torch.randn(2, 3, 4, requires_grad=True)
    sinkhorn_ot_loss(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert torch.all(x.grad[0, 2] == 0)


def _saved_tensor_footprint(max_iter):
    count, nbytes = 0, 0

    def pack(t):
        nonlocal count, nbytes
        count += 1
        nbytes += t.numel() * t.element_size()
        return t

    x = torch.randn(4, 16, 8, requires_grad=True)
    y = torch.randn(4, 5, 8, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = sinkhorn_ot_loss(x, y, 1e-3, max_iter=max_iter, tol=0.0)
    loss.backward()
    return count, nbytes


def test_ot_graph_size_does_not_depend_on_max_iter():
    small = _saved_tensor_footprint(10)
    large = _saved_tensor_footprint(300)
    assert small == large
    # sanity of the probe: an unrolled solver would save tensors at every iteration
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive_unrolled_log_sinkhorn(x, torch.randn(3, 4, dtype=torch.float64), 0.1, 50)
    assert count > small[0] + 50


def test_ot_warns_when_not_converged_and_names_the_knobs():
    x, y = torch.randn(3, 32, 8), torch.randn(3, 6, 8)
    with pytest.warns(SinkhornConvergenceWarning, match=r"`max_iter`.*`epsilon`"):
        sinkhorn_ot_loss(x, y, epsilon=1e-3, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornConvergenceWarning)
        sinkhorn_ot_loss(x, y, epsilon=0.1, max_iter=100)  # converges: no warning


def test_ot_without_grad_and_under_inference_mode():
    x, y = torch.randn(2, 5, 4, requires_grad=True), torch.randn(2, 3, 4)
    with torch.inference_mode():
        value = sinkhorn_ot_loss(x, y)
    torch.testing.assert_close(value, sinkhorn_ot_loss(x, y).detach())


def test_ot_input_errors():
    x, y = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="3 dims"):
        sinkhorn_ot_loss(x[0], y)
    with pytest.raises(ValueError, match="same batch size"):
        sinkhorn_ot_loss(x, y[:1])
    with pytest.raises(ValueError, match=r"L = H·W.*L = 4 and 6"):
        sinkhorn_ot_loss(x, torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="non-empty"):
        sinkhorn_ot_loss(torch.randn(0, 5, 4), torch.randn(0, 3, 4))
    with pytest.raises(ValueError, match="non-empty"):
        sinkhorn_ot_loss(x, torch.randn(2, 0, 4))
    bad = x.clone()
    bad[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"`image_tokens` to be finite.*1 non-finite"):
        sinkhorn_ot_loss(bad, y)
    for eps in (0.0, -0.1):
        with pytest.raises(ValueError, match="`epsilon` > 0"):
            sinkhorn_ot_loss(x, y, epsilon=eps)
    with pytest.raises(ValueError, match="`epsilon` to be finite"):
        sinkhorn_ot_loss(x, y, epsilon=float("nan"))
    with pytest.raises(ValueError, match="`max_iter` >= 1"):
        sinkhorn_ot_loss(x, y, max_iter=0)
    with pytest.raises(TypeError, match="`max_iter` to be an int"):
        sinkhorn_ot_loss(x, y, max_iter=10.0)
    with pytest.raises(ValueError, match="`tol` >= 0"):
        sinkhorn_ot_loss(x, y, tol=-1.0)
    with pytest.raises(TypeError, match="`tol` to be a float \\(or int\\)"):
        sinkhorn_ot_loss(x, y, tol="1e-5")
    with pytest.raises(ValueError, match="reduction"):
        sinkhorn_ot_loss(x, y, reduction="batchmean")
    with pytest.raises(ValueError, match=r"`image_weights` of shape \(5,\) or \(2, 5\)"):
        sinkhorn_ot_loss(x, y, image_weights=torch.ones(3))
    with pytest.raises(ValueError, match="`text_weights` to be non-negative"):
        sinkhorn_ot_loss(x, y, text_weights=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`text_weights.sum\(-1\)` > 0"):
        sinkhorn_ot_loss(x, y, text_weights=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="`image_weights` to be finite"):
        sinkhorn_ot_loss(x, y, image_weights=torch.full((5,), float("nan")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_ot_runs_on_cpu_only_machine_without_touching_cuda():
    # POT 0.9.7's torch backend creates CUDA tensors at first use when CUDA is available; on a
    # CPU-only machine with a CUDA build of torch it must neither crash nor initialise CUDA.
    sinkhorn_ot_loss(torch.randn(2, 4, 3), torch.randn(2, 2, 3), max_iter=1000)
    assert not torch.cuda.is_initialized()
