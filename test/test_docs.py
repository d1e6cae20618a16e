"""The Markdown pages hold together: links resolve, no placeholder, a short README.

Checked on the files git tracks (nothing is rendered or imported):

- every relative Markdown link ``[text](path)`` or ``[text](path#anchor)`` in a tracked
  ``*.md`` file resolves to a file or directory, relative to the page that holds it;
  links to web addresses (``http://``, ``https://``, ``mailto:``) are not checked;
- every anchor into a Markdown page (``page.md#anchor``, or ``#anchor`` in the same
  page) matches one of its headings, slugged as GitHub does: lower case, punctuation
  other than ``-`` and ``_`` dropped, each space a ``-``, a repeated heading suffixed
  ``-1``, ``-2``, ...;
- no tracked ``*.md`` or ``*.py`` file (this one excepted) holds a placeholder: an
  ALL-CAPS name ending in ``_PARAGRAPH``, a ``XXX``/``TBD``/``FIXME``/``TODO`` marker,
  or (in Markdown) a ``{{ name }}`` template hole;
- ``README.md`` is at most 200 lines (reference material goes to ``docs/``).

Fenced code blocks and inline code spans are skipped when looking for links and
headings; a link is found when it stays on one line (every link here does). A
failure names the file, the line and the fix.
"""

import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")
PLACEHOLDERS = (
    (
        re.compile(r"\b[A-Z][A-Z0-9_]*_PARAGRAPH\b"),
        "an ALL-CAPS *_PARAGRAPH placeholder",
    ),
    (re.compile(r"\b(?:XXX|TBD|FIXME|TODO)\b"), "a XXX/TBD/FIXME/TODO marker"),
)
TEMPLATE_HOLE = re.compile(r"\{\{\s*[\w.\- ]*\s*\}\}")


def tracked_files(pattern: str) -> List[str]:
    """Repo-relative paths of the files that git tracks matching ``pattern``."""
    out = subprocess.run(
        ["git", "ls-files", "--", pattern],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [path for path in out.stdout.splitlines() if (REPO_ROOT / path).is_file()]


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a Markdown text outside fenced code blocks, with
    inline code spans blanked out."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, CODE_SPAN.sub("", line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before de-duplication)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors_of(path: Path) -> Set[str]:
    """Every heading anchor of the Markdown file ``path``, as GitHub numbers them."""
    seen: Dict[str, int] = {}
    anchors = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def link_problem(page: str, target: str) -> str:
    """Why the link ``target`` on ``page`` does not resolve, or '' when it does."""
    path_part, _, anchor = target.partition("#")
    source = REPO_ROOT / page
    resolved = (source.parent / path_part).resolve() if path_part else source
    if not resolved.exists():
        return f"'{path_part}' does not exist (relative to {page})"
    if anchor and resolved.suffix == ".md" and anchor not in anchors_of(resolved):
        known = ", ".join(sorted(anchors_of(resolved))) or "none"
        where = resolved.relative_to(REPO_ROOT)
        return f"no heading of {where} has anchor '#{anchor}' (anchors: {known})"
    return ""


def test_every_relative_link_in_markdown_resolves():
    """Each relative link of every tracked page names an existing file or directory,
    and each anchor into a Markdown page names one of its headings."""
    problems = []
    for page in tracked_files("*.md"):
        text = (REPO_ROOT / page).read_text(encoding="utf-8")
        for number, line in prose_lines(text):
            for match in LINK.finditer(line):
                target = match.group(1)
                if target.startswith(EXTERNAL):
                    continue
                problem = link_problem(page, target)
                if problem:
                    problems.append(f"{page}:{number}: link '{target}': {problem}")
    fix = "Fix: point each link at the file's current path or heading, or remove it."
    assert not problems, "\n".join(problems + [fix])


def test_no_placeholder_is_left_in_markdown_or_python():
    """No tracked page or Python file holds a placeholder or a to-do marker."""
    problems = []
    for path in tracked_files("*.md") + tracked_files("*.py"):
        if path == THIS_FILE:
            continue
        text = (REPO_ROOT / path).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            for pattern, what in PLACEHOLDERS:
                if pattern.search(line):
                    problems.append(f"{path}:{number}: {what}: {line.strip()}")
            if path.endswith(".md") and TEMPLATE_HOLE.search(line):
                problems.append(
                    f"{path}:{number}: a {{{{ }}}} template hole: {line.strip()}"
                )
    fix = (
        "Fix: write the real text (measured numbers from the recipe's RESULTS.md or "
        "README), or remove the sentence; never invent a number."
    )
    assert not problems, "\n".join(problems + [fix])


def test_readme_is_an_entry_page_of_at_most_200_lines():
    """README.md stays short: reference material belongs in docs/ or a recipe README."""
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md: {len(lines)} lines, more than {README_MAX_LINES}. Fix: move "
        "reference material into docs/ (or a recipe README) and link to it."
    )


def test_github_slugs_follow_githubs_rules():
    """The slug function gives the anchors GitHub gives these headings."""
    assert github_slug("Phone recognition probe (PER)") == "phone-recognition-probe-per"
    assert github_slug("On the GPU: attention, gradient sync") == (
        "on-the-gpu-attention-gradient-sync"
    )
    assert github_slug("Beside upstream's recipes: the `ssl2` template") == (
        "beside-upstreams-recipes-the-ssl2-template"
    )
    assert github_slug("RESULTS.md") == "resultsmd"
    assert github_slug("wav2vec 2.0 pretraining") == "wav2vec-20-pretraining"
