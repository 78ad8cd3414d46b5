"""EXPLAIN-R: Algorithm 1's moving-average estimators vs the naive in-batch KL (issue 10).

Held-out retrieval faithfulness R@1 (image→text and text→image, CLIP's own top-1 as ground
truth, blocks of 1000) of linear concept surrogates trained with each estimator, at several
batch sizes on a fixed data size, several seeds — side by side in one run, whatever it shows.

The "CLIP" here is synthetic (no weights, no data offline): each image has a sparse binary
concept vector c (``--concepts`` concepts, ~``--active`` active); its image embedding is a
fixed random *non-linear* map of c plus noise (so a linear surrogate cannot be exact), and
each of its 5 captions embeds near the image (fresh noise per caption). Training draws a
random caption per image and epoch; evaluation uses the first caption of held-out images.
Same initialisation, data, order and number of epochs for both estimators at a batch size.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_explainr_estimators.py             # default grid
    PYTHONPATH=src python benchmarks/bench_explainr_estimators.py --quick     # ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lico_lightning.concepts import ConceptSurrogate
from lico_lightning.functional import blockwise_retrieval_faithfulness
from lico_lightning.losses import SurrogateDistillationLoss


def make_data(n: int, concepts: int, dim: int, active: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    c = (torch.rand(n, concepts, generator=g) < active / concepts).float()
    w1 = torch.randn(concepts, 4 * dim, generator=g) / active**0.5
    w2 = torch.randn(4 * dim, dim, generator=g) / (4 * dim) ** 0.5
    image = torch.tanh(c @ w1) @ w2 + 0.3 * torch.randn(n, dim, generator=g)
    image = F.normalize(image, dim=-1)
    captions = F.normalize(
        image[:, None, :] + 0.35 * torch.randn(n, 5, dim, generator=g), dim=-1
    )  # (n, 5, K)
    return c, image, captions


def train_and_eval(estimator, batch, args, data, seed):
    (c_tr, img_tr, cap_tr), (c_te, img_te, cap_te) = data
    n = c_tr.shape[0]
    torch.manual_seed(seed)
    f = ConceptSurrogate(args.concepts, args.dim)
    loss_fn = SurrogateDistillationLoss(
        n, temperature=0.1, gamma_teacher=args.gamma, gamma_student=args.gamma, estimator=estimator
    )
    opt = torch.optim.AdamW(f.parameters(), lr=args.lr, weight_decay=1e-6, amsgrad=True)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(args.epochs):
        order = torch.randperm(n, generator=g)
        pick = torch.randint(0, 5, (n,), generator=g)
        for start in range(0, n - batch + 1, batch):  # drop the last partial batch
            idx = order[start : start + batch]
            opt.zero_grad()
            out = loss_fn(img_tr[idx], cap_tr[idx, pick[idx]], f(c_tr[idx]), idx)
            out.loss.backward()
            opt.step()
    with torch.no_grad():
        r1 = blockwise_retrieval_faithfulness(
            f(c_te), img_te, cap_te[:, 0], k=(1,), block_size=1000
        )
    return r1[0, 0].item(), r1[1, 0].item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=4096)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--concepts", type=int, default=128)
    parser.add_argument("--active", type=float, default=6.0)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.9, help="γ1 = γ2 (paper: 0.9)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and seeds")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds = 5, 2
    torch.set_num_threads(args.threads)
    c, img, cap = make_data(args.train + args.test, args.concepts, args.dim, args.active, seed=0)
    split = args.train
    data = ((c[:split], img[:split], cap[:split]), (c[split:], img[split:], cap[split:]))
    print(
        f"N_train={args.train} N_test={args.test} C={args.concepts} K={args.dim} "
        f"epochs={args.epochs} lr={args.lr} seeds={args.seeds} γ={args.gamma} "
        "(held-out faithfulness R@1)"
    )
    print(f"{'batch':>6} {'estimator':>15} {'I→T R@1':>16} {'T→I R@1':>16} {'s/run':>7}")
    for batch in args.batches:
        row = {}
        for estimator in ("moving_average", "in_batch"):
            t0 = time.perf_counter()
            runs = [train_and_eval(estimator, batch, args, data, s) for s in range(args.seeds)]
            dt = (time.perf_counter() - t0) / args.seeds
            i2t = [r[0] for r in runs]
            t2i = [r[1] for r in runs]
            row[estimator] = statistics.mean(i2t)
            sd = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
            print(
                f"{batch:>6} {estimator:>15} {statistics.mean(i2t):>8.3f} ± {sd(i2t):.3f}"
                f" {statistics.mean(t2i):>8.3f} ± {sd(t2i):.3f} {dt:>7.1f}"
            )
        print(
            f"{'':>6} {'u/v − naive':>15} {row['moving_average'] - row['in_batch']:>+8.3f} (I→T R@1)"
        )


if __name__ == "__main__":
    main()
