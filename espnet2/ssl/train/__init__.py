"""The trainer and what wraps ESPnet's training loop for SSL pretraining.

Modules:

* ``batch_seconds``: batch size in seconds of audio: per-device batch, accum_grad, and
  LR scaling.
* ``checkpoint``: checkpoints that survive a kill: atomic saves and mid-epoch training
  state.
* ``grad_sync``: one gradient all-reduce per optimizer update under DDP gradient
  accumulation.
* ``host_syncs``: counts the operations that make the host wait for the device (host
  syncs).
* ``seen_audio``: how much audio the model has been trained on: hours seen, seconds per
  update.
* ``trainer``: ESPnet's Trainer with a budget in hours seen, a stop on repeated
  non-finite steps, atomic and mid-epoch checkpoints, one all-reduce per update.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
