"""espnet2/bin/*.py: no command-line module imports another one.

A CLI module is an entry point (``python -m espnet2.bin.X``): what two CLIs share
lives in a library module under ``espnet2/`` (e.g. ``espnet2/ssl/release/hf/
folder.py`` for ``ssl_hf_convert`` and ``ssl_pack``), so importing one CLI never runs
another's imports and each can change its options alone.
"""

import ast
from pathlib import Path

import pytest

BIN_DIR = Path(__file__).resolve().parents[3] / "espnet2" / "bin"
BIN_FILES = sorted(p for p in BIN_DIR.glob("*.py") if p.name != "__init__.py")


def bin_imports(source: str) -> list:
    """``(line, module)`` of every import of an ``espnet2.bin`` module in ``source``,
    at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "espnet2":  # from espnet2 import bin
                names = [f"espnet2.{alias.name}" for alias in node.names]
            elif node.module == "espnet2.bin":  # from espnet2.bin import ssl_x
                names = [f"espnet2.bin.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [f"espnet2.bin.{node.module or ''}"]  # relative: inside bin/
        else:
            continue
        hits = [n for n in names if n == "espnet2.bin" or n.startswith("espnet2.bin.")]
        found += [(node.lineno, name) for name in hits]
    return found


def test_the_check_sees_every_form_of_import():
    source = (
        "import espnet2.bin.ssl_pack\n"
        "from espnet2.bin import ssl_pack\n"
        "from espnet2.bin.ssl_pack import main\n"
        "from espnet2 import bin\n"
        "def f():\n    from .ssl_pack import main\n"
        "from espnet2.ssl.model_files import unpack_model\n"
        "import espnet2.binary_thing\n"
    )
    assert [line for line, _ in bin_imports(source)] == [1, 2, 3, 4, 6]


@pytest.mark.parametrize("path", BIN_FILES, ids=lambda p: p.name)
def test_no_espnet2_bin_module_imports_another(path):
    imports = bin_imports(path.read_text(encoding="utf-8"))
    problems = [
        f"espnet2/bin/{path.name}:{line} imports {name}" for line, name in imports
    ]
    assert not problems, (
        "; ".join(problems) + ". Fix: move what both command-line modules need into "
        "a library module under espnet2/ (e.g. espnet2/ssl/release/hf/folder.py) and "
        "import it from there in both."
    )
