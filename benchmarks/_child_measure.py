"""The harness of the benchmarks that measure each configuration in its own child process
(``bench_clip_accum.py``, ``bench_clip_lora.py``), so the peak memory of one does not hide the
other's: the parent re-runs the script with ``--child KEY`` and reads the child's last line
of JSON; the child times its step with :func:`time_and_peak`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def time_and_peak(run: Callable[[], None], device: Any, repeats: int) -> tuple[float, float]:
    """Seconds per ``run()`` over ``repeats`` calls after one untimed warm-up, and the peak
    memory in bytes above the size before the warm-up (model and batch already built): on CUDA
    ``torch.cuda.max_memory_allocated``, on CPU the process's peak resident size (``ru_maxrss``).

    The peak is taken over the warm-up too: the CPU's ``ru_maxrss`` never goes down again.
    """
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run()  # warm-up (allocator, kernels, optimiser states); not timed
    if cuda:
        torch.cuda.synchronize()  # the warm-up's queued kernels are not timed either
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return seconds, float(max(peak, 0))


def run_children(script: str, keys: Iterable[int]) -> Iterator[tuple[int, dict[str, float]]]:
    """``(key, result)`` of ``python script <this process's arguments> --child key`` for each
    key, one child process at a time."""
    for key in keys:
        out = subprocess.run(
            [sys.executable, script, *sys.argv[1:], "--child", str(key)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        yield key, json.loads(out.strip().splitlines()[-1])
