"""Spawn gloo worker processes (or torchrun) for the multi-rank tests, bounded in time, with one
retry on a transient start failure."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

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


# Messages of a torchrun / gloo start that failed for a transient reason (a port taken between
# picking and binding it, a rendezvous that timed out on a busy machine), not a bug in ntkdr.
_TRANSIENT = (
    "Address already in use",
    "EADDRINUSE",
    "Connection refused",
    "RendezvousConnectionError",
    "RendezvousTimeoutError",
    "DistNetworkError",
    "connectFullMesh",
    "Connection reset by peer",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(args, *, nproc: int, env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node=nproc ARGS`` on loopback with a freshly picked free port.

    One retry (on a new port) when the first try failed with a transient start error (see
    ``_TRANSIENT``); any other failure, or a second one, is returned for the caller to assert on.
    """
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.fail(f"torchrun is not installed beside {sys.executable}")
    for attempt in range(2):
        cmd = [
            str(torchrun),
            f"--nproc-per-node={nproc}",
            "--nnodes=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{free_port()}",
            *[str(a) for a in args],
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        transient = any(t in done.stdout + done.stderr for t in _TRANSIENT)
        if done.returncode == 0 or not transient or attempt == 1:
            return done
    raise AssertionError("unreachable")
