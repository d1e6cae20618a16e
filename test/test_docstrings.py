"""Every module, public class and public function of the overlay has a docstring.

The rule, checked with ``ast`` on every Python file that git tracks under ``espnet2/``
(nothing is imported):

- every module needs a docstring (package ``__init__.py`` files too);
- a class or function is *public* when its name, and the name of every class that
  encloses it, does not start with ``_``. Every public class, and every public
  function and method defined at module level or in a class body, needs a docstring.
  ``@property`` getters count as methods; a property's ``@x.setter`` and
  ``@x.deleter`` share the getter's docstring and are exempt;
- functions nested in functions (closures, local helpers) are exempt, and so is all
  that they contain;
- dunder methods are exempt, except ``__init__`` of a public class when it takes
  arguments besides ``self``: those arguments must then be documented, either by an
  ``Args:`` section in the class docstring (Google style) or by a docstring of
  ``__init__`` itself;
- definitions under module-level ``if``/``try``/``with`` blocks count as module level.

A docstring is the string literal that opens the body, stripped of whitespace; an
empty one counts as missing. A failure lists ``file:line:name`` for each missing one.
"""

import ast
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
FunctionNode = Union[ast.FunctionDef, ast.AsyncFunctionDef]
DefinitionNode = Union[FunctionNode, ast.ClassDef]


def tracked_python_files() -> List[str]:
    """Repo-relative paths of the Python files that git tracks under ``espnet2/``."""
    out = subprocess.run(
        ["git", "ls-files", "--", "espnet2/*.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(p for p in out.splitlines() if p.endswith(".py"))


def has_docstring(node: Union[ast.Module, DefinitionNode]) -> bool:
    """True when ``node``'s body opens with a non-empty string literal."""
    return bool((ast.get_docstring(node) or "").strip())


def is_public(name: str) -> bool:
    """True for names that do not start with ``_``."""
    return not name.startswith("_")


def is_dunder(name: str) -> bool:
    """True for ``__name__``-style special method names."""
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def is_property_accessor(node: FunctionNode) -> bool:
    """True for ``@x.setter`` / ``@x.deleter`` methods of a property."""
    return any(
        isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
        for d in node.decorator_list
    )


def init_takes_arguments(node: FunctionNode) -> bool:
    """True when ``__init__`` takes anything besides ``self``."""
    a = node.args
    positional = a.posonlyargs + a.args
    return len(positional) > 1 or bool(a.kwonlyargs or a.vararg or a.kwarg)


def class_documents_arguments(node: ast.ClassDef) -> bool:
    """True when the class docstring has a Google-style ``Args:`` section."""
    doc = ast.get_docstring(node) or ""
    return any(line.strip() in ("Args:", "Arguments:") for line in doc.splitlines())


def definitions(body: List[ast.stmt]) -> Iterator[DefinitionNode]:
    """Class and function definitions of a module or class body.

    Definitions under ``if``/``try``/``with`` blocks are included; the bodies of
    functions are not entered.
    """
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.AsyncWith)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    inner = (
                        child.body if isinstance(child, ast.ExceptHandler) else [child]
                    )
                    yield from definitions(inner)


def needs_docstring(node: DefinitionNode, owner: Optional[ast.ClassDef]) -> bool:
    """Applies the rule of this module to one definition (``owner``: its class)."""
    if isinstance(node, ast.ClassDef):
        return is_public(node.name)
    if node.name == "__init__" and owner is not None:
        return init_takes_arguments(node) and not class_documents_arguments(owner)
    if is_dunder(node.name) or not is_public(node.name):
        return False
    return not (owner is not None and is_property_accessor(node))


def missing_docstrings(path: str, source: str) -> List[str]:
    """``path:line:name`` of each missing docstring in one file's ``source``."""
    tree = ast.parse(source, filename=path)
    missing = [] if has_docstring(tree) else [f"{path}:1:<module>"]

    def visit(body: List[ast.stmt], owner: Optional[ast.ClassDef], prefix: str):
        for node in definitions(body):
            name = f"{prefix}{node.name}"
            if needs_docstring(node, owner) and not has_docstring(node):
                missing.append(f"{path}:{node.lineno}:{name}")
            if isinstance(node, ast.ClassDef) and is_public(node.name):
                visit(node.body, node, f"{name}.")

    visit(tree.body, None, "")
    return missing


def test_every_module_public_class_and_function_has_a_docstring():
    missing = [
        entry
        for path in tracked_python_files()
        for entry in missing_docstrings(path, (REPO_ROOT / path).read_text())
    ]
    assert missing == [], "missing docstrings (see test/test_docstrings.py):\n" + (
        "\n".join(missing)
    )


def test_checker_applies_the_rule_to_each_kind_of_definition():
    source = '''"""Module."""
def public(): pass
def _private(): pass
class Documented:
    """Class.

    Args:
        x: documented here.
    """
    def __init__(self, x): pass
    def __len__(self): pass
    @property
    def size(self): pass
    @size.setter
    def size(self, value): pass
    def _helper(self):
        def nested(): pass
class Bare:
    """No Args section."""
    def __init__(self, x): pass
class NoArguments:
    """Nothing to document."""
    def __init__(self): pass
class _Private:
    def method(self): pass
if True:
    def conditional(): pass
'''
    assert missing_docstrings("m.py", source) == [
        "m.py:2:public",
        "m.py:13:Documented.size",
        "m.py:20:Bare.__init__",
        "m.py:27:conditional",
    ]


def test_checker_reports_a_module_without_docstring_and_an_empty_docstring():
    source = 'x = 1\nclass A:\n    """  """\n'
    assert missing_docstrings("m.py", source) == ["m.py:1:<module>", "m.py:2:A"]


def test_every_tracked_file_is_checked():
    files = tracked_python_files()
    assert "espnet2/ssl/espnet_model.py" in files
    assert all(p.startswith("espnet2/") for p in files)
