"""The layout rules import-linter cannot see: the core imports the standard library only, and
SQL text and dialect checks live in `server.store` alone."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Statement openings as SQL text, not words in prose: a keyword followed by what SQL puts there.
SQL_TEXT = re.compile(
    r"\b(SELECT\s+(\*|1\b|count\(|[a-z_]+\.[a-z_*]+|DISTINCT)|INSERT\s+INTO\s+[a-z_]+\s*\(|"
    r"UPDATE\s+[a-z_]+\s+SET\b|DELETE\s+FROM\s+[a-z_]+\s+WHERE|ON\s+CONFLICT\s*\()"
)
DIALECT = ("is_postgres", "execute_sql", "pw.SQL(", "peewee.SQL(", "SQL(")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _string_constants(tree: ast.AST) -> list[str]:
    """String literals that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_core_imports_the_standard_library_only() -> None:
    found = []
    for path in _modules("server/core"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and name.split(".")[:2] != ["server", "core"]:
                    found.append(f"{path.relative_to(ROOT)}: {name}")
    assert not found, found


def test_sql_text_and_dialect_checks_live_in_the_store_only() -> None:
    found = []
    for path in _modules("server", "jobs"):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("server", "store"):
            continue
        source = path.read_text()
        code = [s for s in _string_constants(ast.parse(source)) if SQL_TEXT.search(s)]
        found += [f"{rel}: SQL text {s[:60]!r}" for s in code]
        found += [
            f"{rel}: {word}" for word in DIALECT if re.search(rf"\b{re.escape(word)}", source)
        ]
    assert not found, "\n".join(found)


def test_the_sql_check_recognises_sql() -> None:
    """The patterns above catch the statements the store writes (a check that cannot fail
    would prove nothing)."""
    sources = [p.read_text() for p in _modules("server/store")]
    hits = sum(1 for s in sources for c in _string_constants(ast.parse(s)) if SQL_TEXT.search(c))
    assert hits >= 5
    assert not SQL_TEXT.search("select the users to update, then delete from the list")
