"""Facts about this machine and process, shared by every layer: CPU name, usable cores, peak
resident memory, file hashes. Standard library only, so any module may import it."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
from pathlib import Path


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or os.uname().machine


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (``avx512f``, ``amx_int8``, ...); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), which can be fewer than ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def peak_rss_bytes() -> int:
    """Peak resident memory of this process image. On Linux VmHWM, not ru_maxrss: the latter
    carries over the parent's peak through fork + exec, so a child evaluating a small model
    started by a parent holding a big one would report the parent's memory."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if platform.system() == "Darwin" else 1024)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def die_with_parent() -> None:
    """``preexec_fn`` of a worker subprocess: on Linux the kernel sends it SIGTERM when the process
    that started it ends, however it ends (``kill PID`` of a recipe run included), so no orphaned
    evaluation keeps running and writing into a results folder the user has moved on from. A no-op
    where ``prctl`` is missing."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
