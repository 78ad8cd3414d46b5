"""Run a function in 2 spawned CPU processes joined by a gloo group (metric DDP tests)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        queue.put((rank, fn(rank, world_size, *args)))
    finally:
        dist.destroy_process_group()


def run_in_gloo_group(fn: Callable[..., Any], *args: Any, world_size: int = 2) -> list[Any]:
    """``[fn(rank, world_size, *args) for rank in ...]``, each rank in its own process.

    ``fn`` must be a module-level function (it is pickled into spawned processes); its return
    value must be picklable. Returns the results ordered by rank.
    """
    queue = mp.get_context("spawn").Queue()
    mp.start_processes(
        _worker,
        args=(world_size, _free_port(), fn, args, queue),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
    results = dict(queue.get(timeout=60) for _ in range(world_size))
    return [results[rank] for rank in range(world_size)]
