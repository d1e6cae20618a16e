"""What the training data loader does to each example: checks, crops, augmentation,
collate.

Modules:

* ``augment``: waveform augmentation of SSL pretraining batches: noise, speed and
  volume.
* ``checked_dataset``: ESPnet's training dataset with every example checked
  (``--bad_utterances``).
* ``collate``: the SSL collate: ESPnet's HuBERT collate plus fixed-length crops.
* ``crop``: fixed-length crops of an utterance with its frame labels, aligned to model
  frames.
* ``example_check``: what makes one SSL training example bad: its audio, and its frame
  labels.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
