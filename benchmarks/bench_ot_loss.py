"""LICO OT loss: batched envelope-gradient solver vs a per-sample ``ot.sinkhorn2`` loop.

Measures, side by side in one run (CPU):

1. forward + backward time of ``sinkhorn_ot_loss`` (one batched log-domain Sinkhorn from
   ``ot.batch``, plan detached, ⟨T*, C⟩ recomputed for the gradient) against a Python loop of
   ``ot.sinkhorn2(..., method="sinkhorn_log")`` per sample on the torch backend, which
   differentiates through every unrolled iteration; target ≥ 10× faster at
   B=64, N=128, M=14, L=64;
2. memory against ``max_iter`` ∈ {10, 100, 1000}: bytes of the tensors autograd saves for the
   backward (the graph kept alive between forward and backward), and the growth of the peak
   resident set size (VmHWM, Linux) of a fresh process over one forward + backward. Target:
   flat for the batched loss.

Wall-clock and process-CPU times are both printed: on a shared machine the CPU time is the
steadier of the two (threads=1 by default, so CPU time is the work done).

Both variants use the same cost (1 − cos on L2-normalised rows), ε, iteration cap and stopping
tolerance. ``--tol 0`` (default) runs every iteration in both, so the timing compares equal work.

Run: ``PYTHONPATH=src python benchmarks/bench_ot_loss.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
import warnings

import ot
import torch
import torch.nn.functional as F

from lico_lightning.functional import SinkhornConvergenceWarning, sinkhorn_ot_loss


def make_inputs(batch: int, n: int, m: int, width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    # ReLU feature maps with per-map offsets and prompt tokens with a shared direction: a cost
    # matrix with some structure (random rows would make every cost ~1 and Sinkhorn trivial).
    x = torch.relu(
        torch.randn(batch, n, width, generator=gen) + torch.randn(batch, n, 1, generator=gen)
    )
    y = torch.randn(batch, m, width, generator=gen) + torch.randn(batch, 1, width, generator=gen)
    return x.requires_grad_(True), y.requires_grad_(True)


def batched_loss(x, y, eps, max_iter, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        return sinkhorn_ot_loss(x, y, epsilon=eps, max_iter=max_iter, tol=tol)


def per_sample_loss(x, y, eps, max_iter, tol):
    cost = 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)
    n, m = cost.shape[1:]
    a = torch.full((n,), 1.0 / n)
    b = torch.full((m,), 1.0 / m)
    values = [
        ot.sinkhorn2(
            a, b, cost[i], eps, method="sinkhorn_log", numItermax=max_iter, stopThr=tol, warn=False
        )
        for i in range(cost.shape[0])
    ]
    return torch.stack(values).mean()


VARIANTS = {"batched (ours)": batched_loss, "per-sample ot.sinkhorn2": per_sample_loss}


def time_fwd_bwd(fn, inputs, eps, max_iter, tol, repeats):
    """Median wall-clock and process-CPU seconds of one forward+backward."""
    x, y = inputs
    wall, cpu = [], []
    for r in range(repeats + 1):  # first run is a warm-up
        x.grad = y.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(x, y, eps, max_iter, tol).backward()
        if r:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def saved_bytes(fn, inputs, eps, max_iter, tol):
    """Bytes of the tensors autograd saves for backward (distinct storages counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x, y = inputs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(x, y, eps, max_iter, tol)
    loss.backward()
    return sum(storages.values())


def _status_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_child(name, shape, eps, max_iter, tol, threads, queue):
    torch.set_num_threads(threads)
    inputs = make_inputs(*shape)
    small = make_inputs(2, 4, 3, shape[3])  # warm up allocators and lazy imports
    VARIANTS[name](*small, eps, 5, tol).backward()
    # ru_maxrss would carry the parent's peak over fork/exec: reset the kernel's high-water
    # mark of this process instead (Linux >= 4.0) and read it back after one fwd+bwd.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kib("VmRSS")
    VARIANTS[name](*inputs, eps, max_iter, tol).backward()
    queue.put(_status_kib("VmHWM") - base)


def peak_rss_kib(name, shape, eps, max_iter, tol, threads):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(name, shape, eps, max_iter, tol, threads, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=128, help="feature maps N")
    parser.add_argument("--m", type=int, default=14, help="prompt tokens M")
    parser.add_argument("--width", type=int, default=64, help="L = H·W")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument(
        "--tol",
        type=float,
        default=0.0,
        help="0: run every iteration (a second timing uses tol=1e-5)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-iters", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.n, args.m, args.width)
    print(
        f"torch {torch.__version__}, POT {ot.__version__}, threads={args.threads}, "
        f"B={args.batch} N={args.n} M={args.m} L={args.width} eps={args.epsilon}"
    )

    inputs = make_inputs(*shape)
    for tol in dict.fromkeys([args.tol, 1e-5]):
        print(
            f"\n[time] forward+backward, max_iter={args.max_iter}, tol={tol:g} "
            f"(median of {args.repeats})"
            + ("  <- every iteration runs" if tol == 0 else "  <- default tol: both stop early")
        )
        times = {
            name: time_fwd_bwd(fn, inputs, args.epsilon, args.max_iter, tol, args.repeats)
            for name, fn in VARIANTS.items()
        }
        with torch.no_grad():
            values = {
                name: float(fn(*inputs, args.epsilon, args.max_iter, tol))
                for name, fn in VARIANTS.items()
            }
        for name, (wall, cpu) in times.items():
            print(
                f"  {name:26s} wall {wall * 1e3:9.1f} ms   cpu {cpu * 1e3:9.1f} ms   "
                f"loss={values[name]:.6f}"
            )
        ref, ours = times["per-sample ot.sinkhorn2"], times["batched (ours)"]
        print(
            f"  speed-up (per-sample / batched): wall {ref[0] / ours[0]:.1f}x, "
            f"cpu {ref[1] / ours[1]:.1f}x   (target >= 10x)"
        )

    print("\n[memory] saved-for-backward bytes (graph) and peak RSS growth of one fwd+bwd")
    header = f"  {'max_iter':>8s}"
    for name in VARIANTS:
        header += f" | {name + ' graph':>32s}"
    if not args.no_rss:
        for name in VARIANTS:
            header += f" | {name + ' RSS':>30s}"
    print(header)
    rows = {}
    for it in args.memory_iters:
        graph = {
            name: saved_bytes(fn, make_inputs(*shape), args.epsilon, it, args.tol)
            for name, fn in VARIANTS.items()
        }
        rss = (
            {}
            if args.no_rss
            else {
                name: peak_rss_kib(name, shape, args.epsilon, it, args.tol, args.threads)
                for name in VARIANTS
            }
        )
        rows[it] = graph
        line = f"  {it:8d}"
        for name in VARIANTS:
            line += f" | {graph[name] / 2**20:29.2f} MiB"
        for name in rss:
            line += f" | {rss[name] / 2**10:27.1f} MiB"
        print(line)
    first, last = args.memory_iters[0], args.memory_iters[-1]
    for name in VARIANTS:
        ratio = rows[last][name] / rows[first][name]
        print(f"  graph bytes ratio max_iter={last} / max_iter={first}, {name}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
