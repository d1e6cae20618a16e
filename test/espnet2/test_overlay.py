"""The espnet2/ overlay: our modules and ESPnet 202511's both import through it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import espnet2

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAY = REPO_ROOT / "espnet2"
OUR_MODULE = "espnet2.fileio.kaldi_data_dir"
ESPNET_MODULE = "espnet2.asr.encoder.conformer_encoder"


def _module_file(name: str) -> Path:
    module = __import__(name, fromlist=["__file__"])
    return Path(module.__file__).resolve()


def test_overlay_comes_first_on_the_package_path():
    paths = [Path(p).resolve() for p in espnet2.__path__]
    assert paths[0] == OVERLAY
    assert len(paths) >= 2, "ESPnet's own espnet2 is not on the package path"


def test_a_new_module_of_ours_imports_from_the_repository():
    assert _module_file(OUR_MODULE).is_relative_to(OVERLAY)


def test_an_untouched_espnet_module_still_imports_from_the_installed_espnet():
    path = _module_file(ESPNET_MODULE)
    assert not path.is_relative_to(OVERLAY), path
    assert path.parts[-4:] == ("espnet2", "asr", "encoder", "conformer_encoder.py")


def test_espnet_version_is_kept_by_the_replaced_package_init():
    import espnet

    assert espnet2.__version__ == espnet.__version__ == "202511"


@pytest.mark.parametrize("init", sorted(OVERLAY.rglob("__init__.py")), ids=str)
def test_every_overlay_init_extends_the_package_path(init: Path):
    tree = ast.parse(init.read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__path__"]
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "extend_path"
    ]
    assert calls, f"{init} must set __path__ = extend_path(__path__, __name__)"


def test_overlay_is_found_from_any_working_directory_without_pythonpath(tmp_path):
    """The venv's .pth (written by `make -C tools`) puts the repository first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        f"import {OUR_MODULE} as ours, {ESPNET_MODULE} as theirs;"
        "print('FILES', ours.__file__, theirs.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 0
    ), f"{result.stderr}\nThe overlay is not on sys.path: run `make -C tools`."
    line = next(x for x in result.stdout.splitlines() if x.startswith("FILES "))
    ours, theirs = (Path(p).resolve() for p in line.split()[1:])
    assert ours.is_relative_to(OVERLAY)
    assert not theirs.is_relative_to(OVERLAY)
