"""EXPLAIN-R loss: Algorithm 1 against the paper's formulas computed naively, resume, DDP."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from tests._ddp import run_in_gloo_group
from torch import nn

from lico_lightning.functional import in_batch_similarity_kl
from lico_lightning.losses import MovingAverageEstimator, SurrogateDistillationLoss

N, C, K, TAU = 10, 6, 5, 0.5


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(N, K, generator=g), dim=-1)
    txt = F.normalize(torch.randn(N, K, generator=g), dim=-1)
    concepts = torch.rand(N, C, generator=g)
    return img, txt, concepts


def surrogate(seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(C, K)


def naive_algorithm1_grad(f, img, txt, c, idx, prev_u, prev_v, gamma1, gamma2):
    """Algorithm 1, lines 3–5, with Python loops; both directions, ½ each.

    img / txt / c: the batch's rows; idx: their dataset indices (keys of the states).
    prev_u / prev_v: dict direction -> {sample: value or None (never seen)}.
    """
    b = len(idx)
    params = list(f.parameters())
    total = [torch.zeros_like(p) for p in params]

    def s(i, j):  # student logit f(c_i)·e_T(t_j)/τ, as a differentiable scalar
        fi = F.normalize(f(c[i]), dim=-1)
        return fi @ txt[j] / TAU

    def a(i, j):
        return float(img[i] @ txt[j]) / TAU

    for direction in ("i2t", "t2i"):
        # rows are queries: (i2t) image i vs captions j; (t2i) caption i vs images j
        A = (lambda i, j: a(i, j)) if direction == "i2t" else (lambda i, j: a(j, i))
        S = (lambda i, j: s(i, j)) if direction == "i2t" else (lambda i, j: s(j, i))
        u, v = {}, {}
        for i in range(b):
            u_hat = sum(math.exp(A(i, k)) for k in range(b)) / b
            v_hat = sum(math.exp(float(S(i, k).detach())) for k in range(b)) / b
            old_u, old_v = prev_u[direction][idx[i]], prev_v[direction][idx[i]]
            u[i] = u_hat if old_u is None else (1 - gamma1) * old_u + gamma1 * u_hat
            v[i] = v_hat if old_v is None else (1 - gamma2) * old_v + gamma2 * v_hat
        for i in range(b):
            for j in range(b):
                w = math.exp(A(i, j)) / u[i] * math.exp(float(S(i, j).detach())) / v[i]
                g = sum(torch.exp(S(i, k)) for k in range(b)) / b / torch.exp(S(i, j))
                grads = torch.autograd.grad(g, params)
                for t, gr in zip(total, grads):
                    t += 0.5 * w * gr / b**2
        prev_u[direction].update({idx[i]: u[i] for i in range(b)})
        prev_v[direction].update({idx[i]: v[i] for i in range(b)})
    return total


def test_gradient_equals_algorithm1_naive_on_a_mixed_batch() -> None:
    img, txt, c = data()
    f = surrogate()
    loss_fn = SurrogateDistillationLoss(N, temperature=TAU, gamma_teacher=0.7, gamma_student=0.4)
    prev_u = {"i2t": dict.fromkeys(range(N)), "t2i": dict.fromkeys(range(N))}
    prev_v = copy.deepcopy(prev_u)
    # batch 1 visits 0..3; batch 2 mixes seen (2, 3) and new (5, 7, 8) samples
    for idx in ([0, 1, 2, 3], [8, 2, 5, 3, 7]):
        i = torch.tensor(idx)
        expected = naive_algorithm1_grad(f, img[i], txt[i], c[i], idx, prev_u, prev_v, 0.7, 0.4)
        f.zero_grad()
        loss_fn(img[i], txt[i], f(c[i]), i).loss.backward()
        for p, e in zip(f.parameters(), expected):
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)
    for direction in ("i2t", "t2i"):
        u_est = getattr(loss_fn, f"{direction}_u")
        v_est = getattr(loss_fn, f"{direction}_v")
        for k in range(N):
            assert bool(u_est.seen[k]) == (prev_u[direction][k] is not None)
            if prev_u[direction][k] is not None:
                assert math.isclose(
                    u_est.log_value[k].exp().item(), prev_u[direction][k], rel_tol=1e-5
                )
                assert math.isclose(
                    v_est.log_value[k].exp().item(), prev_v[direction][k], rel_tol=1e-5
                )


def exact_objective_eq11(f, img, txt, c):
    """½ (eq. 11 image→text + eq. 11 text→image), written with loops over the dataset."""
    n = img.shape[0]
    A = img @ txt.T / TAU
    S = F.normalize(f(c), dim=-1) @ txt.T / TAU
    total = 0.0
    for M_e, M_f in ((A, S), (A.T, S.T)):
        for i in range(n):
            for j in range(n):
                g_e = sum(torch.exp(M_e[i, k] - M_e[i, j]) for k in range(n)) / n
                g_f = sum(torch.exp(M_f[i, k] - M_f[i, j]) for k in range(n)) / n
                total = total + 0.5 * torch.log(g_f) / g_e / n**2
    return total


def test_full_batch_gamma_one_equals_autograd_of_exact_objective() -> None:
    img, txt, c = data(3)
    f = surrogate(4)
    exact = exact_objective_eq11(f, img, txt, c)
    expected = torch.autograd.grad(exact, list(f.parameters()))
    # eq. 11 is the symmetric KL up to a constant: the same gradient
    kl = in_batch_similarity_kl(img @ txt.T / TAU, F.normalize(f(c), dim=-1) @ txt.T / TAU)
    for g, e in zip(torch.autograd.grad(kl, list(f.parameters())), expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    loss_fn = SurrogateDistillationLoss(N, temperature=TAU, gamma_teacher=1.0, gamma_student=1.0)
    idx = torch.arange(N)
    for _ in range(2):  # state from a previous step is ignored with γ = 1
        f.zero_grad()
        loss_fn(img, txt, f(c), idx).loss.backward()
        for p, e in zip(f.parameters(), expected):
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)


def test_first_visit_takes_the_batch_value_not_gamma_times_it() -> None:
    est = MovingAverageEstimator(5, gamma=0.9)
    est.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    out = est.update(torch.tensor([1, 4]), torch.tensor([3.0, 4.0]))
    assert out[1].item() == 4.0  # new sample in a mixed batch: its own value
    assert math.isclose(out[0].exp().item(), 0.1 * math.e**2 + 0.9 * math.e**3, rel_tol=1e-6)
    assert est.seen.tolist() == [True, True, False, False, True]
    assert est.log_value[0].item() == 1.0 and est.log_value[2].item() == 0.0


def test_duplicate_indices_take_the_first_occurrence() -> None:
    est = MovingAverageEstimator(3, gamma=0.5)
    out = est.update(torch.tensor([2, 0, 2]), torch.tensor([1.0, 5.0, 7.0]))
    assert out.tolist() == [1.0, 5.0, 1.0]


def train(loss_fn, f, opt, img, txt, c, batches):
    for idx in batches:
        i = torch.tensor(idx)
        opt.zero_grad()
        loss_fn(img[i], txt[i], f(c[i]), i).loss.backward()
        opt.step()


BATCHES = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 4, 6, 8], [1, 3, 5, 7, 9]]


def make(seed=1, sgd=False):
    f = surrogate(seed)
    loss_fn = SurrogateDistillationLoss(N, temperature=TAU)
    if sgd:  # gradient-scale sensitive (Adam would hide a wrong factor)
        return f, loss_fn, torch.optim.SGD(f.parameters(), lr=0.5)
    opt = torch.optim.AdamW(f.parameters(), lr=1e-2, amsgrad=True)
    return f, loss_fn, opt


def test_resume_continues_bitwise(tmp_path) -> None:
    img, txt, c = data()
    f, loss_fn, opt = make()
    train(loss_fn, f, opt, img, txt, c, BATCHES)
    f2, loss_fn2, opt2 = make()
    train(loss_fn2, f2, opt2, img, txt, c, BATCHES[:3])
    torch.save(
        {"f": f2.state_dict(), "loss": loss_fn2.state_dict(), "opt": opt2.state_dict()},
        tmp_path / "ckpt.pt",
    )
    assert {"i2t_u.log_value", "i2t_u.seen", "t2i_v.log_value"} <= set(loss_fn2.state_dict())
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    f3, loss_fn3, opt3 = make(seed=99)
    f3.load_state_dict(state["f"])
    loss_fn3.load_state_dict(state["loss"])
    opt3.load_state_dict(state["opt"])
    train(loss_fn3, f3, opt3, img, txt, c, BATCHES[3:])
    for a, b in zip(f.state_dict().values(), f3.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(loss_fn.state_dict().values(), loss_fn3.state_dict().values()):
        assert torch.equal(a, b)


def _ddp_train(rank: int, world_size: int) -> dict:
    import torch.distributed as dist

    img, txt, c = data()
    f, loss_fn, opt = make(sgd=True)
    for idx in BATCHES:
        local = idx[rank::world_size]  # uneven halves in the last batch
        i = torch.tensor(local)
        opt.zero_grad()
        out = loss_fn(img[i], txt[i], f(c[i]), i)
        out.loss.backward()
        for p in f.parameters():  # what DDP does: average the gradients
            dist.all_reduce(p.grad)
            p.grad /= world_size
        opt.step()
    # plain numpy arrays: tensors sent through the queue would point at the dead worker's memory
    return {
        "f": {k: v.numpy().copy() for k, v in f.state_dict().items()},
        "loss": {k: v.numpy().copy() for k, v in loss_fn.state_dict().items()},
        "kl": out.kl.item(),
    }


def _ddp_worker(rank: int, world_size: int) -> dict:
    return {"train": _ddp_train(rank, world_size), "estimator": _ddp_estimator(rank, world_size)}


@functools.cache
def two_ranks() -> list[dict]:
    """One 2-process gloo group for both DDP tests (spawning costs ~10 s each time)."""
    return run_in_gloo_group(_ddp_worker)


@pytest.mark.distributed
def test_two_process_ddp_equals_one_process_on_the_global_batches() -> None:
    img, txt, c = data()
    f, loss_fn, opt = make(sgd=True)
    # one process sees the global batch in rank order: rank 0's half, then rank 1's
    order = [idx[0::2] + idx[1::2] for idx in BATCHES]
    for idx in order:
        i = torch.tensor(idx)
        opt.zero_grad()
        out = loss_fn(img[i], txt[i], f(c[i]), i)
        out.loss.backward()
        opt.step()
    results = [r["train"] for r in two_ranks()]
    for r in results:
        assert math.isclose(r["kl"], out.kl.item(), rel_tol=1e-5)
        for key, value in f.state_dict().items():
            torch.testing.assert_close(torch.from_numpy(r["f"][key]), value, rtol=1e-5, atol=1e-6)
        for key, value in loss_fn.state_dict().items():
            torch.testing.assert_close(
                torch.from_numpy(r["loss"][key]), value, rtol=1e-5, atol=1e-6
            )
    for key, value in results[0]["loss"].items():  # identical on every rank
        assert (value == results[1]["loss"][key]).all()


def _ddp_estimator(rank: int, world_size: int) -> list:
    est = MovingAverageEstimator(6, gamma=0.5)
    # rank 0 sees samples 0, 1 then 2; rank 1 sees 3, 1 then 4 (1 twice in one global batch)
    steps = (
        [([0, 1], [1.0, 2.0]), ([2], [3.0])] if rank == 0 else [([3, 1], [4.0, 5.0]), ([4], [6.0])]
    )
    out = [est.update(torch.tensor(i), torch.tensor(v)).tolist() for i, v in steps]
    return [out, est.log_value.tolist(), est.seen.tolist()]


@pytest.mark.distributed
def test_estimator_applies_every_rank_update_on_every_rank() -> None:
    ref = MovingAverageEstimator(6, gamma=0.5)
    ref.update(torch.tensor([0, 1, 3, 1]), torch.tensor([1.0, 2.0, 4.0, 5.0]), sync=False)
    ref.update(torch.tensor([2, 4]), torch.tensor([3.0, 6.0]), sync=False)
    r0, r1 = (r["estimator"] for r in two_ranks())
    assert r0[1:] == r1[1:] == [ref.log_value.tolist(), ref.seen.tolist()]
    assert r0[0][0] == [1.0, 2.0] and r1[0][0] == [4.0, 2.0]  # each rank gets its own rows back


def test_bad_inputs() -> None:
    loss_fn = SurrogateDistillationLoss(4)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"Expected `indices` in \[0, 4\)"):
        loss_fn(x, x, x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="of shape"):
        loss_fn(x, x, x, torch.tensor([0]))
    with pytest.raises(TypeError, match="return_index=True"):
        loss_fn(x, x, x, None)
    with pytest.raises(TypeError, match="integer tensor"):
        loss_fn(x, x, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="`surrogate_embeds` of shape"):
        loss_fn(x, x, torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="estimator"):
        SurrogateDistillationLoss(4, estimator="exact")
    with pytest.raises(ValueError, match=r"gamma` in \(0, 1\]"):
        MovingAverageEstimator(4, gamma=1.5)
