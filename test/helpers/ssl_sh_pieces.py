"""Pieces of ``egs2/TEMPLATE/ssl2/ssl.sh`` for tests that run them alone.

Imported by the ``test_ssl_sh_*.py`` files of test/egs2/TEMPLATE/, which put a
function or a stage block of the script after their own settings and stubs.
"""

import re


def shell_function(script: str, name: str) -> str:
    """The definition of the function ``name`` in ``script``."""
    match = re.search(rf"^{name}\(\) {{\n.*?^}}\n", script, re.S | re.M)
    assert match, f"ssl.sh defines no {name}()"
    return match.group(0)


def stage_block(script: str, number: int) -> str:
    """The ``if [ "${stage}" -le N ] ...; then ... fi`` block of stage N."""
    start = f'if [ "${{stage}}" -le {number} ] && [ "${{stop_stage}}" -ge {number} ]'
    match = re.search(rf"^{re.escape(start)}.*?^fi\n", script, re.S | re.M)
    assert match, f"ssl.sh has no stage {number} block"
    return match.group(0)
