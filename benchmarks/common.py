"""Helpers shared by the benchmark scripts: device sync, median timing, common options, JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def device_sync(device: str) -> Callable[[], None]:
    """``torch.cuda.synchronize`` on CUDA (timings then include the device work), else a no-op."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def median_time(call: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``call()``, each followed by ``sync()``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def add_grid_args(
    ap: argparse.ArgumentParser, sizes: list[int], ks: list[int], iters: int, repeats: int
) -> None:
    """``--sizes --ks --iters --repeats --device --json`` with the script's defaults."""
    ap.add_argument("--sizes", type=int, nargs="+", default=sizes)
    ap.add_argument("--ks", type=int, nargs="+", default=ks)
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--repeats", type=int, default=repeats, help="timed calls after a warm-up")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write all rows here")


def write_json(path: str | None, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` (nothing when ``path`` is ``None``)."""
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)
