"""Random draws from CPU generators on any device: a GPU run draws what a CPU run does.

CUDA's Philox generator and the CPU's Mersenne Twister give different numbers for the
same seed, so a model that draws its masks or negatives on its own device draws other
ones on a GPU than on a CPU. ``CpuRandomness`` is a ``TorchDispatchMode`` that runs
every random-number operator (``RANDOM_OPS``: ``rand``, ``randint``, ``randperm``,
``uniform_``, ``bernoulli``, ...) whose tensors, ``device`` or ``generator`` are on
another device on the CPU instead, with the CPU generator that a CPU run would use,
and moves the result to that device (in-place operators write it into their tensor).
Operators that are seeded but are not draws (attention kernels with dropout, dropout
itself, RNNs: torch tags them ``nondeterministic_seeded`` too) run untouched on their
device: the check uses the mode in eval mode, where none of them draws. A
``generator=`` on the device is replaced by a CPU generator made from its
``initial_seed()`` when the mode first sees it (a fresh, seeded generator therefore
gives the CPU's draws). Everything else runs untouched.

Used by the GPU check (``test/gpu/loss_parity.py``) to compare losses on the same draws.
"""

from typing import Any, Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CPU = torch.device("cpu")
# aten operators that only draw random numbers (functional, in-place and out= forms)
RANDOM_OPS = frozenset(
    "rand randn randint randperm rand_like randn_like randint_like uniform uniform_"
    " normal normal_ bernoulli bernoulli_ multinomial exponential exponential_"
    " geometric geometric_ cauchy cauchy_ log_normal log_normal_ poisson".split()
)


class CpuRandomness(TorchDispatchMode):
    """Within ``with CpuRandomness():`` random operators draw on the CPU."""

    def __init__(self) -> None:
        """Starts with no generator seen (see the module docstring)."""
        super().__init__()
        self.generators: Dict[torch.Generator, torch.Generator] = {}
        self.redirected = 0  # random operators run on the CPU for another device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Runs ``func``; a random operator of another device runs on the CPU."""
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ not in RANDOM_OPS:
            return func(*args, **kwargs)
        device = _foreign_device(args, kwargs)
        if device is None:
            return func(*args, **kwargs)
        self.redirected += 1
        return self._on_cpu(func, args, kwargs, device)

    def _cpu_generator(self, generator: torch.Generator) -> torch.Generator:
        """The CPU generator standing in for ``generator`` (made on first sight)."""
        if generator not in self.generators:
            cpu = torch.Generator().manual_seed(generator.initial_seed())
            self.generators[generator] = cpu
        return self.generators[generator]

    def _on_cpu(self, func, args: Tuple, kwargs: Dict, device: torch.device) -> Any:
        """``func`` on CPU copies of its inputs; results and writes go to ``device``."""
        copies: List[Tuple[torch.Tensor, torch.Tensor]] = []

        def to_cpu(x: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.device != CPU:
                copy = x.to(CPU)
                copies.append((x, copy))
                return copy
            if isinstance(x, torch.device) and x != CPU:
                return CPU
            if isinstance(x, torch.Generator) and x.device != CPU:
                return self._cpu_generator(x)
            return x

        cpu_args, cpu_kwargs = tree_map(to_cpu, (args, kwargs))
        result = func(*cpu_args, **cpu_kwargs)
        originals = {id(copy): original for original, copy in copies}
        for original, copy in copies:  # in-place and out= operators
            if _is_written(func, original, args, kwargs):
                original.copy_(copy)

        def to_device(x: Any) -> Any:
            if not isinstance(x, torch.Tensor):
                return x
            return originals[id(x)] if id(x) in originals else x.to(device)

        return tree_map(to_device, result)


def _foreign_device(args: Tuple, kwargs: Dict):
    """The first non-CPU device among the tensors, devices and generators, or None."""
    for x in tree_flatten((args, kwargs))[0]:
        if isinstance(x, (torch.Tensor, torch.Generator)) and x.device != CPU:
            return x.device
        if isinstance(x, torch.device) and x != CPU:
            return x
    return None


def _is_written(func, tensor: torch.Tensor, args: Tuple, kwargs: Dict) -> bool:
    """Whether ``func``'s schema marks the argument holding ``tensor`` as written."""
    for index, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = args[index] if index < len(args) else kwargs.get(argument.name)
        if value is tensor:
            return True
    return False
