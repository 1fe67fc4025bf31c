"""Spawn a fixed number of gloo worker processes for a test module, bounded in time."""

from __future__ import annotations

import time

import pytest
import torch


def spawn_ranks(worker, tmp_path_factory, name: str, world: int, timeout_s: float) -> str:
    """Run ``worker(rank, tmp)`` on ``world`` spawned processes; return the ``tmp`` folder used.

    One retry with a fresh rendezvous folder: gloo's loopback set-up occasionally fails
    transiently on a busy machine; a second failure is a real one and is raised.
    """
    for attempt in range(2):
        tmp = str(tmp_path_factory.mktemp(name))
        ctx = torch.multiprocessing.start_processes(
            worker, args=(tmp,), nprocs=world, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} workers did not finish within {timeout_s} s")
            return tmp
        except (
            torch.multiprocessing.ProcessRaisedException,
            torch.multiprocessing.ProcessExitedException,
        ):
            if attempt == 1:
                raise
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
    raise AssertionError("unreachable")
