"""Loading a recipe's Python tool (``egs2/<corpus>/ssl2/local/*.py``) as a module.

Recipe tools are scripts, not modules of a package: a test loads one by path and
calls its functions (``main(argv)``, parsers) in the test process.
"""

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` executed as a module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
