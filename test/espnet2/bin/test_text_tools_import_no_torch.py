"""The recipe's light tools start without importing what they do not use.

The main job starts some of these command-line tools many times (scoring every test
set, setting a model path in a config); importing torch costs each about 1.3 s on a
CPU (issue 26). A tool that reads and writes text and YAML imports torch only where it
reads or writes a model (e.g. ``set_frontend_model`` of a packed zip).
"""

import subprocess
import sys

import pytest

TEXT_TOOLS = (
    "espnet2.bin.asr_score",
    "espnet2.bin.ssl_recipe_config",
    "espnet2.bin.ssl_label_quality",
)


@pytest.mark.parametrize("module", TEXT_TOOLS)
def test_the_tool_imports_without_torch(module):
    code = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'torch'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"{module} imports torch: {out}"


def test_plotting_the_pretraining_imports_no_trainer():
    # it reads the trainer's files (torch.load of checkpoint.pth), it does not train
    code = (
        "import sys, espnet2.bin.ssl_plot_stats; "
        "print('espnet2.train.trainer' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_the_check_sees_torch_when_a_tool_imports_it():
    code = "import sys, espnet2.bin.ssl_kmeans; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True"  # k-means assigns labels with torch
