"""Efficient self-supervised speech pretraining: an overlay on ESPnet 202511.

The package installs nothing over ESPnet's files. Its ``espnet2/`` tree is an overlay
that ``make -C tools`` puts first on the virtualenv's ``sys.path`` (CONTRIBUTING.md,
"The overlay"). ``install_requires`` are the pins of ``tools/requirements.txt``, the one
file where versions are fixed.
"""

from pathlib import Path
from typing import List

from setuptools import setup

REQUIREMENTS = Path(__file__).resolve().parent / "tools" / "requirements.txt"


def read_requirements(path: Path = REQUIREMENTS) -> List[str]:
    """Returns the requirement lines of ``path`` without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


setup(
    name="espnet-efficient-ssl",
    version="0.1.0",
    description="Efficient self-supervised speech pretraining for ESPnet",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    install_requires=read_requirements(),
    # No packages: the overlay is used from the repository (see CONTRIBUTING.md), so a
    # `pip install .` never overwrites the files of the installed ESPnet.
    packages=[],
)
