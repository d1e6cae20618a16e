"""CONTRIBUTING.md's replacement manifest matches the overlay's replacements.

A file of ours at the same path as a file of the installed ESPnet 202511 replaces it
whole. Each such file must be listed in CONTRIBUTING.md between the manifest markers,
with a reason. A package ``__init__.py`` is exempt only where ESPnet's own is empty
and ours does nothing but ``extend_path``.

``egs2/`` is compared with upstream ESPnet's recipe tree, recorded in
``test/data/espnet_upstream_egs2.txt`` (no network here): every file we ship under
``egs2/`` lies under a recorded root, and shadows no upstream file and shares no
upstream recipe dir unless the manifest lists it.
"""

import ast
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Set

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = REPO_ROOT / "CONTRIBUTING.md"
UPSTREAM_EGS2 = REPO_ROOT / "test" / "data" / "espnet_upstream_egs2.txt"
START = "<!-- replacement-manifest:start -->"
END = "<!-- replacement-manifest:end -->"
UNLISTED = "{} replaces ESPnet's file but is not listed in CONTRIBUTING.md"
MISSING = "{} is listed in CONTRIBUTING.md but does not exist in the overlay"
NOT_A_REPLACEMENT = "{} is listed but ESPnet 202511 has no such file"
NO_REASON = "{} is listed without a reason"
ROW = re.compile(
    r"^\|\s*`(?P<path>(?:espnet2|egs2)/[^`]+)`\s*\|\s*(?P<reason>.*?)\s*\|\s*$"
)
UNRECORDED = "{} lies under no root of {}: record upstream's files there first"
SHADOWS = "{} shadows upstream ESPnet's file at the same path but is not listed"
SHARES = "{} is in {}, an upstream ESPnet recipe dir: ship under a path upstream lacks"
NOT_UPSTREAM = "{} is listed but upstream ESPnet has no such file"


@dataclass
class Upstream:
    """Upstream ESPnet's files under some egs2/ roots.

    Attributes:
        roots: Each recorded root dir and its number of upstream files (0: absent).
        files: Every upstream file under the roots, with the commit it was read at.
    """

    roots: Dict[str, int]
    files: Dict[str, str]

    def root_of(self, path: str) -> str:
        """The recorded root that holds ``path`` ('' if none)."""
        roots = [root for root in self.roots if path.startswith(root + "/")]
        return max(roots, key=len, default="")


def parse_upstream(text: str) -> Upstream:
    """Reads the record: ``root <dir> <count>`` lines and ``<path> <commit>`` lines."""
    roots, files = {}, {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 3 and fields[0] == "root":
            roots[fields[1]] = int(fields[2])
        elif len(fields) == 2:
            files[fields[0]] = fields[1]
        else:
            assert not fields, f"{UPSTREAM_EGS2}: cannot read '{line}'"
    return Upstream(roots, files)


def our_egs2_files(root: Path) -> Set[str]:
    """The files (and links) of our egs2/ tree that git tracks."""
    out = subprocess.run(
        ["git", "ls-files", "egs2"], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def egs2_problems(
    ours: Set[str], upstream: Upstream, manifest: Dict[str, str]
) -> List[str]:
    """Lists every egs2/ file of ours that would shadow or mix with upstream's."""
    listed = {path for path in manifest if path.startswith("egs2/")}
    problems = []
    for path in sorted(ours):
        root = upstream.root_of(path)
        if not root:
            problems.append(UNRECORDED.format(path, UPSTREAM_EGS2.name))
        elif path in upstream.files and path not in listed:
            problems.append(SHADOWS.format(path))
        elif upstream.roots[root] and path not in listed:
            problems.append(SHARES.format(path, root))
    for path in sorted(listed):
        if path not in ours:
            problems.append(MISSING.format(path))
        elif path not in upstream.files:
            problems.append(NOT_UPSTREAM.format(path))
    return problems


def parse_manifest(text: str) -> Dict[str, str]:
    """Returns {repo-relative path: reason} from the table between the markers."""
    assert START in text and END in text, f"manifest markers missing in {CONTRIBUTING}"
    block = text.split(START, 1)[1].split(END, 1)[0]
    rows = (ROW.match(line.strip()) for line in block.splitlines())
    return {m["path"]: m["reason"] for m in rows if m}


def overlay_files(root: Path) -> Dict[str, Path]:
    """Python files of the overlay tree under ``root``: {'espnet2/...': location}."""
    return {
        p.relative_to(root).as_posix(): p
        for p in (root / "espnet2").rglob("*.py")
        if "__pycache__" not in p.parts
    }


def espnet_files() -> Dict[str, Path]:
    """The installed ESPnet distribution's espnet2 Python files: {path: location}."""
    dist = metadata.distribution("espnet")
    return {
        f.as_posix(): Path(dist.locate_file(f))
        for f in dist.files or []
        if f.as_posix().startswith("espnet2/") and f.suffix == ".py"
    }


def has_code(path: Path) -> bool:
    """True when a Python file does more than hold a docstring."""
    body = ast.parse(path.read_text()).body
    return any(
        not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        for n in body
    )


def only_extends_path(path: Path) -> bool:
    """True when a package ``__init__.py`` holds at most a docstring, the
    ``extend_path`` import and ``__path__ = extend_path(__path__, __name__)``."""
    allowed = (
        "from pkgutil import extend_path",
        "__path__ = extend_path(__path__, __name__)",
    )
    body = ast.parse(path.read_text()).body
    statements = [
        n
        for n in body
        if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    return all(ast.unparse(n) in allowed for n in statements)


def manifest_problems(
    ours: Dict[str, Path], theirs: Dict[str, Path], manifest: Dict[str, str]
) -> List[str]:
    """Lists every disagreement between the overlay, ESPnet and the manifest."""
    problems = []
    for path in sorted(ours.keys() & theirs.keys()):
        exempt = (
            path.endswith("__init__.py")
            and not has_code(theirs[path])
            and only_extends_path(ours[path])
        )
        if path not in manifest and not exempt:
            problems.append(UNLISTED.format(path))
    for path, reason in sorted(manifest.items()):
        if path.startswith("egs2/"):
            continue  # egs2_problems
        if path not in ours:
            problems.append(MISSING.format(path))
        elif path not in theirs:
            problems.append(NOT_A_REPLACEMENT.format(path))
        if not reason:
            problems.append(NO_REASON.format(path))
    return problems


def test_every_replacement_of_an_espnet_file_is_listed_with_a_reason():
    manifest = parse_manifest(CONTRIBUTING.read_text())
    assert manifest_problems(overlay_files(REPO_ROOT), espnet_files(), manifest) == []


def test_no_egs2_file_of_ours_shadows_or_mixes_with_upstream_recipes():
    manifest = parse_manifest(CONTRIBUTING.read_text())
    upstream = parse_upstream(UPSTREAM_EGS2.read_text())
    assert egs2_problems(our_egs2_files(REPO_ROOT), upstream, manifest) == []


def test_the_upstream_record_holds_as_many_files_as_each_root_says():
    upstream = parse_upstream(UPSTREAM_EGS2.read_text())
    counts = {root: 0 for root in upstream.roots}
    for path in upstream.files:
        assert upstream.root_of(path), path
        counts[upstream.root_of(path)] += 1
    assert counts == upstream.roots
    assert upstream.roots["egs2/TEMPLATE/ssl1"] > 0  # the template we moved off


def test_egs2_checker_reports_shadowing_mixing_and_unrecorded_files():
    upstream = Upstream(
        roots={"egs2/TEMPLATE/ssl1": 2, "egs2/TEMPLATE/ssl2": 0},
        files={"egs2/TEMPLATE/ssl1/ssl.sh": "c1", "egs2/TEMPLATE/ssl1/README.md": "c2"},
    )
    ours = {
        "egs2/TEMPLATE/ssl1/ssl.sh",
        "egs2/TEMPLATE/ssl1/new.sh",
        "egs2/TEMPLATE/ssl2/ssl.sh",
        "egs2/other/asr1/run.sh",
    }
    assert egs2_problems(ours, upstream, {}) == [
        SHARES.format("egs2/TEMPLATE/ssl1/new.sh", "egs2/TEMPLATE/ssl1"),
        SHADOWS.format("egs2/TEMPLATE/ssl1/ssl.sh"),
        UNRECORDED.format("egs2/other/asr1/run.sh", UPSTREAM_EGS2.name),
    ]
    listed = {"egs2/TEMPLATE/ssl1/ssl.sh": "a strict superset of upstream's options"}
    assert egs2_problems({"egs2/TEMPLATE/ssl1/ssl.sh"}, upstream, listed) == []
    listed = {"egs2/TEMPLATE/ssl2/ssl.sh": "why"}
    assert egs2_problems(set(), upstream, listed) == [
        MISSING.format("egs2/TEMPLATE/ssl2/ssl.sh")
    ]
    assert egs2_problems({"egs2/TEMPLATE/ssl2/ssl.sh"}, upstream, listed) == [
        NOT_UPSTREAM.format("egs2/TEMPLATE/ssl2/ssl.sh")
    ]


def test_the_installed_espnet_is_the_pinned_release():
    assert metadata.version("espnet") == "202511"
    assert "espnet2/tasks/ssl.py" in espnet_files()


def test_replaced_package_inits_keep_espnet_public_names():
    import importlib

    theirs = espnet_files()
    for path in sorted(overlay_files(REPO_ROOT).keys() & theirs.keys()):
        if not path.endswith("__init__.py"):
            continue
        names = {
            alias.asname or alias.name
            for node in ast.parse(theirs[path].read_text()).body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        module = importlib.import_module(path[: -len("/__init__.py")].replace("/", "."))
        assert all(hasattr(module, n) for n in names), (path, names)


def _tree(tmp_path: Path, files: Dict[str, str]) -> Dict[str, Path]:
    out = {}
    for rel, text in files.items():
        out[rel] = tmp_path / "espnet" / rel
        out[rel].parent.mkdir(parents=True, exist_ok=True)
        out[rel].write_text(text)
    return out


def test_checker_reports_an_unlisted_replacement(tmp_path):
    theirs = _tree(tmp_path, {"espnet2/ssl/espnet_model.py": "x = 1\n"})
    problems = manifest_problems(
        {"espnet2/ssl/espnet_model.py": Path("unread")}, theirs, {}
    )
    assert problems == [UNLISTED.format("espnet2/ssl/espnet_model.py")]


def test_checker_reports_a_listed_file_that_does_not_exist(tmp_path):
    theirs = _tree(tmp_path, {"espnet2/tasks/ssl.py": "x = 1\n"})
    problems = manifest_problems({}, theirs, {"espnet2/tasks/ssl.py": "why"})
    assert problems == [MISSING.format("espnet2/tasks/ssl.py")]


def test_checker_reports_a_listed_file_that_replaces_nothing_and_a_missing_reason(
    tmp_path,
):
    ours = {"espnet2/new.py": Path("unread")}
    problems = manifest_problems(ours, {}, {"espnet2/new.py": ""})
    assert problems == [
        NOT_A_REPLACEMENT.format("espnet2/new.py"),
        NO_REASON.format("espnet2/new.py"),
    ]


def test_checker_exempts_only_inits_that_are_empty_in_espnet_and_extend_only(
    tmp_path,
):
    empty = '"""Doc only."""\n'
    theirs = _tree(
        tmp_path / "espnet",
        {
            "espnet2/a/__init__.py": empty,
            "espnet2/b/__init__.py": empty,
            "espnet2/__init__.py": "from x import y\n",
        },
    )
    extend = (
        '"""Ours."""\n\nfrom pkgutil import extend_path\n\n'
        "__path__ = extend_path(__path__, __name__)\n"
    )
    ours = _tree(
        tmp_path / "ours",
        {
            "espnet2/a/__init__.py": extend,
            "espnet2/b/__init__.py": extend + "register_things()\n",
            "espnet2/__init__.py": extend,
        },
    )
    assert manifest_problems(ours, theirs, {}) == [
        UNLISTED.format("espnet2/__init__.py"),
        UNLISTED.format("espnet2/b/__init__.py"),
    ]


def test_manifest_parser_reads_table_rows_between_the_markers():
    text = "\n".join(
        [
            "| `espnet2/x.py` | outside the markers |",
            START,
            "| file | reason |",
            "|---|---|",
            "| `espnet2/tasks/ssl.py` | registers the new choices |",
            END,
        ]
    )
    assert parse_manifest(text) == {"espnet2/tasks/ssl.py": "registers the new choices"}
