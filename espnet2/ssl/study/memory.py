"""Peak tensor memory of a step on the CPU, from torch.profiler's allocation records.

GPUs have ``torch.cuda.max_memory_allocated``; on a CPU the profiler records every
tensor allocation (+ bytes) and free (- bytes) with its time (``profile_memory=True``).
The running sum of these records, in time order, is the memory held by tensors
allocated since profiling began, and its maximum during a call is that call's peak.
Used by the planner (activation memory per second of audio) and the benchmarks.
"""

import warnings
from typing import Callable, Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile, record_function

MEASURED = "measured_call"  # profiler annotation of the measured call


def allocation_records(prof: profile) -> List[Tuple[int, int]]:
    """``(time ns, bytes)`` of every CPU tensor allocation (+) and free (-), in order.

    Read from the profiler's raw ``[memory]`` records: ``prof.events()`` folds the
    allocations made inside an op into that op's ``self`` memory, which loses their
    order relative to the op's children.
    """
    cpu = torch._C._autograd.DeviceType.CPU
    records = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == cpu
    ]
    return sorted(records, key=lambda record: record[0])  # stable for equal times


def annotation_range(prof: profile, name: str) -> Tuple[int, int]:
    """Start and end (ns, the records' clock) of the ``record_function(name)``."""
    for event in prof.profiler.kineto_results.events():
        if event.name() == name and event.is_user_annotation():
            return event.start_ns(), event.end_ns()
    raise KeyError(name)


def tensor_memory(
    before: Callable[[], None], measured: Callable[[], object]
) -> Tuple[int, int]:
    """Tensor bytes ``before()`` leaves live, and the peak above them in ``measured()``.

    Both run in one profiling session, so frees during ``measured`` of tensors
    that ``before`` allocated are recorded. Tensors allocated before the session
    are invisible: their frees are not recorded (torch warns "Memory block of
    unknown size"), so they never lower the peak.

    Returns:
        ``(live_bytes, peak_bytes)``: the running sum of the records at the start
        of ``measured``, and the maximum of the running sum during it minus that.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Profiler clears events at the end..."
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            before()
            with record_function(MEASURED):
                measured()
    start, end = annotation_range(prof, MEASURED)
    records = allocation_records(prof)
    live = peak = base = sum(nbytes for time, nbytes in records if time < start)
    for time, nbytes in records:
        if start <= time <= end:
            live += nbytes
            peak = max(peak, live)
    return base, peak - base


def check_memory_measure() -> Dict[str, int]:
    """Runs ``tensor_memory`` on tensors of known size; raises if it is off.

    ``before`` keeps 40 MB (decimal). Then 4 MB and 8 MB live together (12 MB), a
    4 MB product of the 8 MB one is added after the 4 MB one is freed (still
    12 MB), all are freed, the 40 MB tensor is freed (-40 MB) and 16 MB allocated:
    the peak above the start is 12 MB, not the 32 MB of all allocations, nor the
    16 MB seen if the free of the 40 MB were not recorded.
    """
    old = []

    def allocate() -> None:
        a, b = torch.ones(1_000_000), torch.ones(2_000_000)
        del a
        c = b[::2] * 2.0  # (1_000_000,), allocated inside aten::mul
        del b, c
        old.clear()
        d = torch.ones(4_000_000)
        del d

    live, peak = tensor_memory(lambda: old.append(torch.ones(10_000_000)), allocate)
    expected = {"live_bytes": 40_000_000, "peak_bytes": 12_000_000}
    measured = {"live_bytes": live, "peak_bytes": peak}
    # a few bytes of scalars may be counted
    if any(abs(measured[k] - expected[k]) > 1024 for k in expected):
        raise RuntimeError(f"memory measure: {measured}, expected {expected}")
    return {**measured, **{f"expected_{k}": v for k, v in expected.items()}}
