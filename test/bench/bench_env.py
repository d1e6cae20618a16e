"""Machine facts shared by the benchmarks of test/bench (Linux ``/proc`` readers).

Imported by the benchmark scripts, which run as files from the repository root, so
their own folder is first on ``sys.path``.
"""

import platform
from typing import Dict, List, Optional

import torch

from espnet2.utils.cpu import cpu_flags as all_cpu_flags

SIMD_PREFIXES = ("avx", "amx", "fma", "f16c")  # flags that matter for float32 matmuls
MB = 2**20


def loadavg() -> List[float]:
    """The 1, 5 and 15 minute load averages (other processes slow a benchmark)."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def read_status_kib(key: str) -> int:
    """A ``/proc/self/status`` value in KiB (e.g. ``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux ``clear_refs`` 5); False if denied."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_flags() -> List[str]:
    """The SIMD flags of this CPU that matter for float32 matmuls, sorted."""
    return sorted(x for x in all_cpu_flags() if x.startswith(SIMD_PREFIXES))


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_device_peak(device: torch.device) -> Optional[int]:
    """Resets the CUDA allocator's peak; returns the bytes allocated now (None: CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def device_peak_mb(device: torch.device) -> float:
    """``torch.cuda.max_memory_allocated`` since the last reset, in MB."""
    return torch.cuda.max_memory_allocated(device) / MB


def device_facts(device: torch.device) -> Dict[str, Optional[str]]:
    """Where a benchmark ran: ``device``, ``device_name`` (the card), CUDA version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "cuda": torch.version.cuda}
