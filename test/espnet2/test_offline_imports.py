"""Importing the modules our recipes start looks up no host and connects nowhere.

A fresh interpreter refuses, in its own process only, every internet socket
(``AF_INET``/``AF_INET6``), ``socket.create_connection`` and host lookup
(``getaddrinfo``, ``gethostbyname``), records which import asked and from where, then
imports the task modules, ESPnet's entry points that the recipes run and every
``espnet2/bin`` tool of ours. ESPnet's ``espnet2/text/phoneme_tokenizer.py`` imported
``g2p_en`` at module top, whose import runs ``nltk.download`` when the nltk data are
missing; ours imports it on first use. The one socket left is urllib3's IPv6 probe
(``LOOPBACK_PROBES``). One interpreter imports them all (each task import costs
seconds on 2 cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ESPNET_ENTRY_POINTS = [
    "espnet2.tasks.ssl",
    "espnet2.tasks.asr",
    "espnet2.bin.asr_inference",
    "espnet2.bin.ssl_train",
    "espnet2.bin.asr_train",
]
OUR_TOOLS = sorted(
    f"espnet2.bin.{path.stem}"
    for path in (REPO_ROOT / "espnet2" / "bin").glob("*.py")
    if path.stem != "__init__"
)
IMPORT_TIMEOUT_S = 600
OFFLINE_VARIABLES = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"]
# urllib3 (imported by ESPnet's hugging_face_tokenizer -> transformers ->
# huggingface_hub -> requests) probes IPv6 support at import by binding an AF_INET6
# socket to ::1: no lookup, no packet leaves the host, and it is third-party code.
LOOPBACK_PROBES = {"urllib3/util/connection.py:_has_ipv6"}

# Run by ``python -c`` in the child: refuse internet sockets, host lookups and
# connections, record who asked (module imported, calling frame), report as JSON.
GUARDED_IMPORTS = r"""
import importlib, json, socket, sys, traceback

report = dict(network={}, sockets={}, errors={})
current = [None]


def refuse(kind, what):
    frames = traceback.extract_stack()[:-2]
    caller = frames[-1]
    where = "/".join(caller.filename.split("/")[-3:]) + ":" + caller.name
    stack = "".join(traceback.format_list(frames[-12:]))
    report[kind].setdefault(current[0], []).append(dict(where=where, what=what,
                                                        stack=stack))
    raise OSError(f"test_offline_imports: {what} refused")


socket_init = socket.socket.__init__


def guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
    internet = (socket.AF_INET, socket.AF_INET6)
    if family in internet or (family == -1 and fileno is None):
        refuse("sockets", f"socket.socket(family={family})")
    socket_init(self, family, type, proto, fileno)


def refusing(name):
    return lambda *args, **kwargs: refuse("network", f"{name}{args}")


socket.socket.__init__ = guarded_init
for name in ["create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"]:
    setattr(socket, name, refusing(name))

for name in sys.argv[1:]:
    current[0] = name
    try:
        importlib.import_module(name)
    except BaseException as error:
        report["errors"][name] = f"{type(error).__name__}: {error}"
report["loaded"] = sorted(m for m in ("g2p_en", "nltk") if m in sys.modules)
print("RESULT " + json.dumps(report))
"""


def _describe(records) -> str:
    return "\n".join(
        f"{module}: {r['what']} at {r['where']}\n{r['stack']}"
        for module, entries in records.items()
        for r in entries
    )


@pytest.fixture(scope="module")
def offline_imports(tmp_path_factory):
    """The child's report (network, sockets, errors, loaded) and its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", GUARDED_IMPORTS, *ESPNET_ENTRY_POINTS, *OUR_TOOLS],
        cwd=tmp_path_factory.mktemp("offline"),
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("RESULT ") :]), result.stderr


def test_our_tools_are_all_imported():
    assert "espnet2.bin.ssl_sweep" in OUR_TOOLS and len(OUR_TOOLS) >= 10


def test_every_task_entry_point_and_tool_imports_without_error(offline_imports):
    report, _ = offline_imports
    assert report["errors"] == {}


def test_no_import_looks_up_a_host_or_connects(offline_imports):
    report, _ = offline_imports
    assert report["network"] == {}, _describe(report["network"])


def test_the_only_internet_socket_is_urllib3s_loopback_ipv6_probe(offline_imports):
    report, _ = offline_imports
    creators = {r["where"] for entries in report["sockets"].values() for r in entries}
    assert creators <= LOOPBACK_PROBES, _describe(report["sockets"])


def test_nltk_download_is_not_attempted_and_g2p_en_is_not_imported(offline_imports):
    report, stderr = offline_imports
    assert "Error loading" not in stderr and "nltk_data" not in stderr, stderr
    # nltk itself is imported (ESPnet's espnet/nets/e2e_mt_common.py, for BLEU, via
    # asr_inference -> tasks.enh_s2t): that import downloads nothing.
    assert "g2p_en" not in report["loaded"]
