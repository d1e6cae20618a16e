"""Fixtures of the mini_synth recipe-level tests: ssl_train runs and tiny corpora.

Shared by the ``test_ssl_*.py`` files here (as fixtures: test/ is not a package).
Both fixtures are session-scoped factories; what they make is not shared: every
``synth_corpus(...)`` call builds its own corpus in a fresh temporary folder, so
each test file keeps its own seed and sizes in its own module-scoped fixture.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import pytest

from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
STDERR_TAIL = 4000  # characters of stderr shown when a run fails


class SSLTrain:
    """``python -m espnet2.bin.ssl_train`` of this checkout, in a subprocess.

    Call it as ``ssl_train(cwd, *args, env=None, check=True)``; ``command`` and
    ``environ`` build the same run for callers that start it themselves (Popen).
    """

    def environ(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """``os.environ`` with ``PYTHONPATH`` set to the repository root, and
        ``extra`` (e.g. ``{"OMP_NUM_THREADS": "1"}``) on top."""
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra or {})}

    def command(self, *args: str, code: Optional[str] = None) -> List[str]:
        """The argv: ``python -m espnet2.bin.ssl_train *args``, or with ``code``
        ``python -c code *args`` (a script that ends by running ssl_train)."""
        entry = ["-m", "espnet2.bin.ssl_train"] if code is None else ["-c", code]
        return [sys.executable, *entry, *args]

    def speech_args(self, config: Path) -> List[str]:
        """Training on the speech of data/train and data/dev (``wav.scp``) with
        ``config``, tokens.txt, on CPU, as the mini_synth recipe trains."""
        args = ["--token_list", "tokens.txt", "--token_type", "word", "--ngpu", "0"]
        args += ["--use_preprocessor", "true", "--config", str(config)]
        data = "data/{}/wav.scp,speech,sound"
        args += ["--train_data_path_and_name_and_type", data.format("train")]
        args += ["--valid_data_path_and_name_and_type", data.format("dev")]
        return args

    def __call__(
        self,
        cwd: Path,
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Runs ssl_train with ``args`` in ``cwd`` and waits for it.

        Args:
            cwd: The working directory (the corpus root: relative paths start there).
            *args: ssl_train's command-line arguments.
            env: Variables set on top of ``environ()``.
            check: Assert exit status 0, showing the tail of stderr if not.

        Returns:
            The finished process, stdout and stderr captured as text.
        """
        result = subprocess.run(
            self.command(*args),
            cwd=cwd,
            env=self.environ(env),
            capture_output=True,
            text=True,
        )
        if check:
            assert result.returncode == 0, result.stderr[-STDERR_TAIL:]
        return result


@pytest.fixture(scope="session")
def ssl_train() -> SSLTrain:
    """``ssl_train(cwd, *args, env=None, check=True) -> CompletedProcess``, with
    ``.command(*args, code=None)``, ``.environ(extra=None)`` and
    ``.speech_args(config)`` (see ``SSLTrain``)."""
    return SSLTrain()


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory, ssl_train):
    """``make(name, seed, *, train_minutes, labeled_minutes, dev_minutes,
    test_minutes, tokens=("<unk>",), collect_stats_config=None, env=None) -> Path``.

    ``make`` synthesises a corpus (``SynthCorpusConfig`` with those values) into
    ``data/{train,train_labeled,dev,test}`` and ``audio/`` of a new temporary folder
    named after ``name``, and returns that folder. With ``tokens`` it writes them to
    ``tokens.txt``, one a line (None: no file). With ``collect_stats_config`` it then
    runs ESPnet's collect-stats with that config on data/train and data/dev
    (``ssl_train.speech_args``), which writes ``stats/{train,valid}/speech_shape``;
    ``env`` goes to that run as to ``ssl_train``.
    """

    def make(
        name: str,
        seed: int,
        *,
        train_minutes: float,
        labeled_minutes: float,
        dev_minutes: float,
        test_minutes: float,
        tokens: Optional[Sequence[str]] = ("<unk>",),
        collect_stats_config: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Path:
        root = tmp_path_factory.mktemp(name)
        config = SynthCorpusConfig(
            seed=seed,
            train_minutes=train_minutes,
            labeled_minutes=labeled_minutes,
            dev_minutes=dev_minutes,
            test_minutes=test_minutes,
        )
        build_corpus(config, root / "data", root / "audio", show_progress=False)
        if tokens is not None:
            (root / "tokens.txt").write_text("".join(f"{t}\n" for t in tokens))
        if collect_stats_config is not None:
            ssl_train(
                root, *ssl_train.speech_args(collect_stats_config),
                "--collect_stats", "true", "--output_dir", "stats",
                "--train_shape_file", "data/train/wav.scp",
                "--valid_shape_file", "data/dev/wav.scp", env=env,
            )  # fmt: skip
        return root

    return make
