"""Budgets and studies: what a run costs before it runs, sweeps of runs, training
curves.

Modules:

* ``flops``: FLOPs of an SSL model: counted by torch on a real forward, and an analytic
  count.
* ``memory``: peak tensor memory of a step on the CPU, from torch.profiler's allocation
  records.
* ``planner``: what an SSL pretraining run costs before it runs: parameters, FLOPs,
  batch, budget.
* ``sweep``: study sweeps: several pretraining runs of a recipe, fine-tuned, scored,
  tabulated.
* ``sweep_budget``: the compute of each run of a study sweep, and the audio it may see
  on a budget.
* ``training_curves``: training statistics per epoch, against updates and hours of audio
  seen.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
