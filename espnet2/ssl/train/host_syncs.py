"""Counts the operations that make the host wait for the device (host syncs).

On a GPU the Python thread queues kernels and runs ahead; an operation that needs a
value computed on the device on the host (a scalar read, an output whose size
depends on the data) stalls it until every queued kernel has finished. This counter
finds such operations in a run on any device, the CPU included, so that a test on a
machine without a GPU can hold a training step to a budget.

It records, with the first caller outside torch:

* aten operations that read a device value on the host or size their output by the
  data (``SYNC_OPS``: ``_local_scalar_dense`` from ``.item()``, ``int(t)``,
  ``bool(t)``, ``if t:``, a slice bounded by a tensor; ``nonzero`` from
  one-argument ``where``; ``_unique2``, ``masked_select``, ``equal``, ...),
  seen through a ``TorchDispatchMode``;
* indexing with a boolean tensor (``aten::index``/``index_put_`` with a bool
  index: a ``nonzero`` inside the kernel), except ``x[mask] = scalar`` which
  becomes ``masked_fill_`` without a sync;
* the Python-level reads that emit no aten operation: ``Tensor.tolist``,
  ``Tensor.numpy``, ``Tensor.cpu`` (each a device-to-host copy on a GPU);
* tensors made from Python data (``aten::lift_fresh``: ``torch.tensor(...)``,
  ``torch.as_tensor(3.0)``, ESPnet's ``force_gatherable`` of a Python float): made
  on a GPU, that is a blocking host-to-device copy.

What it cannot see (on a CPU run every tensor is already on the host): moves of
host-made tensors to the device (``torch.zeros(n).to(x.device)``, blocking on a
GPU), ``.to("cpu")``, ``torch.cuda.synchronize``, the caching allocator's own syncs,
and waits inside collectives.

References: ``torch.utils._python_dispatch.TorchDispatchMode``; the sync sites are
those measured in the team's reference notes (gpu.md, section 4).
"""

import traceback
from collections import Counter
from typing import Any, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::argwhere",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::masked_select",
        "aten::equal",
        "aten::is_nonzero",
        "aten::bincount",
        "aten::histc",
        "aten::repeat_interleave",
        "aten::lift_fresh",
    }
)
BOOL_INDEX_OPS = frozenset({"aten::index", "aten::index_put_", "aten::index_put"})
PYTHON_READS = ("tolist", "numpy", "cpu")  # Tensor methods counted at the Python level


def _op_name(func: Any) -> str:
    """``aten::name`` of an OpOverload (without the overload)."""
    return f"{func.namespace}::{func._opname}"


def _has_bool_index(args: tuple) -> bool:
    """Whether an ``index``/``index_put`` call has a boolean index tensor."""
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in (indices or ())
    )


def _is_masked_fill(args: tuple) -> bool:
    """``x[mask] = v`` with one value: ESPnet's kernel runs ``masked_fill_``."""
    return len(args) > 2 and isinstance(args[2], torch.Tensor) and args[2].numel() == 1


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename
        if "/torch/" not in path and path != __file__:
            return f"{path}:{frame.lineno}"
    return "?"


class HostSyncCounter(TorchDispatchMode):
    """A context manager recording every host sync of the code run inside it.

    Example::

        with HostSyncCounter() as syncs:
            loss, stats, weight = model(speech, speech_lengths)
            loss.backward()
        assert syncs.count <= 3, syncs.summary()
    """

    def __init__(self) -> None:
        """Starts with no records."""
        super().__init__()
        self.records: List[str] = []  # "aten::nonzero @ file:line" per sync
        self._saved: Dict[str, Any] = {}

    @property
    def count(self) -> int:
        """Number of host syncs recorded."""
        return len(self.records)

    def summary(self) -> str:
        """One line per distinct sync site, with its count.

        Returns:
            e.g. ``"2 x aten::_local_scalar_dense @ espnet_model.py:120"`` lines.
        """
        counts = Counter(self.records)
        return "\n".join(f"{n} x {site}" for site, n in counts.most_common())

    def _record(self, name: str) -> None:
        self.records.append(f"{name} @ {_caller()}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Records ``func`` when it syncs, then runs it."""
        name = _op_name(func)
        if name in SYNC_OPS:
            self._record(name)
        elif name in BOOL_INDEX_OPS and _has_bool_index(args):
            if not (name != "aten::index" and _is_masked_fill(args)):
                self._record(f"{name}(bool mask)")
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> "HostSyncCounter":
        """Also wraps the Python-level reads (``PYTHON_READS``)."""
        for method in PYTHON_READS:
            original = getattr(torch.Tensor, method)
            self._saved[method] = original
            setattr(torch.Tensor, method, self._wrap(method, original))
        super().__enter__()
        return self

    def __exit__(self, *exc_info: Optional[Any]) -> None:
        """Restores the wrapped methods."""
        super().__exit__(*exc_info)
        for method, original in self._saved.items():
            setattr(torch.Tensor, method, original)
        self._saved = {}

    def _wrap(self, method: str, original: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record(f"Tensor.{method}")
            return original(tensor, *args, **kwargs)

        return counted
