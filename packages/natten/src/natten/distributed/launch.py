"""Runs a function on every rank of a fresh process group on this machine: spawned processes, no
torchrun. Meant for tests, benchmarks and examples (a training job has its own launcher).

gloo on the CPU; NCCL with one GPU per rank when the machine has at least as many GPUs as ranks.
``fn(rank, world, device, *args)`` must be a module-level function (the children import it); its
return value comes back pickled, and any rank's exception comes back as a RuntimeError carrying that
rank's traceback. A world that does not finish within ``timeout`` seconds is killed, so a hang fails
instead of blocking.
"""

from __future__ import annotations

import datetime
import os
import pickle
import tempfile
import time
import traceback

import torch
import torch.multiprocessing as mp


def backend_for(world: int) -> tuple[str, str]:
    """``(backend, device type)`` the worlds of this machine use."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= world:
        return "nccl", "cuda"
    return "gloo", "cpu"


def _entry(rank: int, world: int, folder: str, threads: int, fn, args) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    backend, kind = backend_for(world)
    device = torch.device(kind, rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"file://{folder}/store",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        result = ("ok", fn(rank, world, device, *args))
    except BaseException:
        result = ("error", traceback.format_exc())
    with open(f"{folder}/{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    dist.destroy_process_group()


def spawn(world: int, fn, *args, timeout: float = 300.0, threads: int | None = None) -> list:
    """Every rank's return value of ``fn(rank, world, device, *args)``, in rank order. Each rank uses
    ``threads`` CPU threads (default: this machine's cores shared out, at least one)."""
    threads = threads or max(1, (os.cpu_count() or 1) // world)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        args = (folder, threads, fn, args)
        procs = [ctx.Process(target=_entry, args=(r, world, *args), daemon=True) for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(deadline - time.monotonic(), 0.0))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for r in hung:
            procs[r].kill()
        results = []
        for r in range(world):
            path = os.path.join(folder, f"{r}.pkl")
            if not os.path.exists(path):
                why = "did not finish in time" if r in hung else f"exited with code {procs[r].exitcode}"
                raise RuntimeError(f"rank {r} of a world of {world} {why}")
            with open(path, "rb") as f:
                status, value = pickle.load(f)
            if status == "error":
                raise RuntimeError(f"rank {r} of a world of {world} failed:\n{value}")
            results.append(value)
        return results
