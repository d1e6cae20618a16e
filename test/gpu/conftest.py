"""Fixtures of the GPU check's tests: its scripts imported as modules.

The scripts of test/gpu and test/bench run as files (their own folder first on
``sys.path``), so their folders are appended to ``sys.path`` here before importing
them; their file names are unique.
"""

import importlib
import sys
from pathlib import Path

import pytest
import torch

FOLDERS = (
    Path(__file__).resolve().parent,
    Path(__file__).resolve().parents[1] / "bench",
)


@pytest.fixture(scope="session")
def script():
    """``script(name)``: the module of test/gpu/<name>.py or test/bench/<name>.py."""
    for folder in FOLDERS:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return importlib.import_module


@pytest.fixture
def keep_threads():
    """Restores torch's thread count after a test (the benchmarks set it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
