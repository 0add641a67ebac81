"""Device selection and thread control (no trusting defaults on small boxes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEVICES = ("auto", "cpu", "cuda")


def available_cores() -> int:
    """Cores this process may run on (respects affinity / cgroup pinning where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:n]`` to a torch device; ``cuda`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            from .errors import DeviceError

            raise DeviceError("device='cuda' was asked for but no CUDA device is available")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}: use one of auto, cpu, cuda")


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: the cores available) and return it."""
    n = available_cores() if not n or n <= 0 else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``); None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - raise AttributeError where they are missing
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def reuse_freed_memory(limit: int = 32 << 20) -> Iterator[None]:
    """Inside, glibc keeps freed blocks up to ``limit`` bytes on its heap instead of unmapping them and grows
    the heap in big steps, so a loop that allocates the same large tensors every step stops paying a page fault
    per 4 KiB to touch fresh memory (measured: a third of an adaptation step). On exit the heap is trimmed and
    the thresholds left where glibc's own dynamic rule takes a torch process (mmap threshold = the largest freed
    block, up to 32 MiB; trim threshold twice that): setting glibc's 128 KiB defaults back would turn its dynamic
    rule off and made later encoding 20% slower. A no-op where the C library is not glibc."""
    libc = glibc()
    if libc is None:
        yield
        return
    mallopt, trim = libc.mallopt, libc.malloc_trim
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, limit)
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_top_pad, 8 * limit)  # grow the heap in big steps
    try:
        yield
    finally:
        mallopt(m_top_pad, 128 << 10)
        mallopt(m_trim_threshold, 2 * limit)
        trim(0)
