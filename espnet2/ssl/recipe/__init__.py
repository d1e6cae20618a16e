"""Recipe glue: what ``ssl.sh`` reads from and sets in the pretraining and fine-tuning
configs.

Modules:

* ``finetune_config``: the SSL model an ASR fine-tuning starts from, as the recipe's
  stage 7 sets it up.
* ``pretrain_config``: what the SSL recipe reads from, and sets in, a pretraining
  config.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
