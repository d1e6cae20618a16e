"""espnet2/utils/tool_logging.py: tools log their arguments, fail without tracebacks."""

import argparse
import logging

import pytest

from espnet2.utils.tool_logging import exit_with_error, start_tool_logging


def test_start_tool_logging_logs_the_arguments(caplog):
    with caplog.at_level(logging.INFO):
        start_tool_logging("demo.py", argparse.Namespace(out_dir="data", seed=3))
    assert "demo.py arguments: {'out_dir': 'data', 'seed': 3}" in caplog.text


def test_exit_with_error_prints_one_line_and_exits_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        exit_with_error("demo.py", "data/train/text:3: empty transcript. Fix: ...")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == "demo.py: error: data/train/text:3: empty transcript. Fix: ...\n"
