"""CONTRIBUTING.md's replacement manifest matches the overlay's replacements.

A file of ours at the same path as a file of the installed ESPnet 202511 replaces it
whole. Each such file must be listed in CONTRIBUTING.md between the manifest markers,
with a reason. A package ``__init__.py`` is exempt only where ESPnet's own is empty
(then ours adds nothing but ``extend_path``).
"""

import ast
import re
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Set

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTING = REPO_ROOT / "CONTRIBUTING.md"
START = "<!-- replacement-manifest:start -->"
END = "<!-- replacement-manifest:end -->"
UNLISTED = "{} replaces ESPnet's file but is not listed in CONTRIBUTING.md"
MISSING = "{} is listed in CONTRIBUTING.md but does not exist in the overlay"
NOT_A_REPLACEMENT = "{} is listed but ESPnet 202511 has no such file"
NO_REASON = "{} is listed without a reason"
ROW = re.compile(r"^\|\s*`(?P<path>espnet2/[^`]+)`\s*\|\s*(?P<reason>.*?)\s*\|\s*$")


def parse_manifest(text: str) -> Dict[str, str]:
    """Returns {repo-relative path: reason} from the table between the markers."""
    assert START in text and END in text, f"manifest markers missing in {CONTRIBUTING}"
    block = text.split(START, 1)[1].split(END, 1)[0]
    rows = (ROW.match(line.strip()) for line in block.splitlines())
    return {m["path"]: m["reason"] for m in rows if m}


def overlay_files(root: Path) -> Set[str]:
    """Python files of the overlay tree under ``root``, as 'espnet2/...' paths."""
    return {
        p.relative_to(root).as_posix()
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


def manifest_problems(
    ours: Set[str], theirs: Dict[str, Path], manifest: Dict[str, str]
) -> List[str]:
    """Lists every disagreement between the overlay, ESPnet and the manifest."""
    problems = []
    for path in sorted(ours & theirs.keys()):
        exempt = path.endswith("__init__.py") and not has_code(theirs[path])
        if path not in manifest and not exempt:
            problems.append(UNLISTED.format(path))
    for path, reason in sorted(manifest.items()):
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


def test_the_installed_espnet_is_the_pinned_release():
    assert metadata.version("espnet") == "202511"
    assert "espnet2/tasks/ssl.py" in espnet_files()


def test_replaced_package_inits_keep_espnet_public_names():
    import importlib

    theirs = espnet_files()
    for path in sorted(overlay_files(REPO_ROOT) & theirs.keys()):
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
    problems = manifest_problems({"espnet2/ssl/espnet_model.py"}, theirs, {})
    assert problems == [UNLISTED.format("espnet2/ssl/espnet_model.py")]


def test_checker_reports_a_listed_file_that_does_not_exist(tmp_path):
    theirs = _tree(tmp_path, {"espnet2/tasks/ssl.py": "x = 1\n"})
    problems = manifest_problems(set(), theirs, {"espnet2/tasks/ssl.py": "why"})
    assert problems == [MISSING.format("espnet2/tasks/ssl.py")]


def test_checker_reports_a_listed_file_that_replaces_nothing_and_a_missing_reason(
    tmp_path,
):
    problems = manifest_problems({"espnet2/new.py"}, {}, {"espnet2/new.py": ""})
    assert problems == [
        NOT_A_REPLACEMENT.format("espnet2/new.py"),
        NO_REASON.format("espnet2/new.py"),
    ]


def test_checker_exempts_only_inits_that_are_empty_in_espnet(tmp_path):
    theirs = _tree(
        tmp_path,
        {
            "espnet2/a/__init__.py": '"""Doc only."""\n',
            "espnet2/__init__.py": "from x import y\n",
        },
    )
    problems = manifest_problems(
        {"espnet2/a/__init__.py", "espnet2/__init__.py"}, theirs, {}
    )
    assert problems == [UNLISTED.format("espnet2/__init__.py")]


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
