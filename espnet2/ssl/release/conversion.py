"""What the model conversion tools share: the folder they write and their exits.

``espnet2.bin.ssl_hf_convert`` (Hugging Face folders) and
``espnet2.bin.ssl_fairseq_import`` (fairseq checkpoints) both write our model as
``config.yaml`` + ``model.pth`` (:func:`write_espnet_folder`) and end the same way
(:func:`run_conversion`): exit status 0 done; 3 a model the other side cannot express
(one line naming the option and why: a recipe skips such an export); 1 any other bad
input (one line); argparse's 2 for bad options.
"""

import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import torch
import yaml

from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError, complete_train_config
from espnet2.utils.tool_logging import exit_with_error
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

NOT_EXPRESSIBLE_STATUS = 3
CONVERSION_ERRORS = (
    KeyError,
    ValueError,
    RuntimeError,  # e.g. load_state_dict: the model file does not fit the config
    OSError,
    pickle.UnpicklingError,  # not a state dict of tensors
    yaml.YAMLError,
)


def write_espnet_folder(
    model: torch.nn.Module, train_config: Dict[str, Any], out_dir: str
) -> None:
    """Write ``out_dir/config.yaml`` and ``out_dir/model.pth`` (each to a temporary
    name, then renamed), loadable with ``SSLTask.build_model_from_file``.

    Args:
        model: Our model.
        train_config: Its training config (completed with the task's defaults).
        out_dir: Output folder (created).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "config.yaml.tmp"
    with partial.open("w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(complete_train_config(train_config), f, indent=4)
    partial.replace(out / "config.yaml")
    torch.save(model.state_dict(), out / "model.pth.tmp")
    (out / "model.pth.tmp").replace(out / "model.pth")


def run_conversion(tool: str, convert: Callable[[], None]) -> None:
    """Run ``convert()``; turn its expected failures into one error line and an exit.

    Args:
        tool: The tool's name, which starts the error line.
        convert: The conversion.

    Raises:
        SystemExit: 3 for a :class:`NotExpressibleError`, 1 for the
            :data:`CONVERSION_ERRORS`; anything else propagates (a bug).
    """
    try:
        convert()
    except NotExpressibleError as err:
        print(f"{tool}: error: NotExpressibleError: {err}", file=sys.stderr)
        sys.exit(NOT_EXPRESSIBLE_STATUS)
    except CONVERSION_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        exit_with_error(tool, f"{type(err).__name__}: {message}")
