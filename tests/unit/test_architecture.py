"""Imports only go down: each stage of dicomnode and each top-level package imports only what the tables allow.

docs/architecture.md draws the same picture; a new sub-package of dicomnode must be placed in STAGE_OF_PREFIX.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "db", "inference", "reports", "phantom", "training", "dicomnode")

# A module belongs to the stage of its longest dotted prefix listed here. Files are named by their path, so
# dicomnode's own __init__ is "dicomnode.__init__" and an unlisted dicomnode/<new>/ matches nothing.
STAGE_OF_PREFIX = {
    "config": "config",
    "db": "db",
    "inference": "inference",
    "reports": "reports",
    "reports.web": "reports.web",
    "phantom": "phantom",
    "training": "training",
    "dicomnode.__init__": "dicomnode.foundation",
    "dicomnode.errors": "dicomnode.foundation",
    "dicomnode.sop_classes": "dicomnode.foundation",
    "dicomnode.io": "dicomnode.io",
    "dicomnode.store": "dicomnode.store",
    "dicomnode.analysis": "dicomnode.analysis",
    "dicomnode.net": "dicomnode.net",
    "dicomnode.jobs": "dicomnode.jobs",
    "dicomnode.app": "dicomnode.app",
}

# What every stage of dicomnode may use from outside it.
_BESIDE_DICOMNODE = {"config", "db", "inference", "reports"}

# Stage -> the other stages it may import (its own modules it always may).
ALLOWED = {
    "config": set(),
    "db": {"config"},
    "inference": set(),
    "reports": {"inference", "config", "db"},
    "reports.web": {"reports", "db", "config", "inference"},
    "phantom": {"inference"},
    "training": {"inference", "phantom"},
    "dicomnode.foundation": _BESIDE_DICOMNODE,
    "dicomnode.io": _BESIDE_DICOMNODE | {"dicomnode.foundation"},
    "dicomnode.store": _BESIDE_DICOMNODE | {"dicomnode.foundation", "dicomnode.io"},
    "dicomnode.analysis": _BESIDE_DICOMNODE | {"dicomnode.foundation", "dicomnode.io"},
    "dicomnode.net": _BESIDE_DICOMNODE | {"dicomnode.foundation", "dicomnode.io", "dicomnode.store"},
    "dicomnode.jobs": _BESIDE_DICOMNODE
    | {"dicomnode.foundation", "dicomnode.io", "dicomnode.store", "dicomnode.analysis", "dicomnode.net"},
    "dicomnode.app": _BESIDE_DICOMNODE
    | {"dicomnode.foundation", "dicomnode.io", "dicomnode.store", "dicomnode.analysis", "dicomnode.net"}
    | {"dicomnode.jobs", "phantom", "reports.web"},
}

# Third-party libraries a stage must never use: the models' analysis runs without a network or a database.
FORBIDDEN_LIBRARIES = {"inference": {"pynetdicom", "sqlalchemy", "fastapi"}}


def stage_of(module: str) -> str | None:
    matches = [prefix for prefix in STAGE_OF_PREFIX if module == prefix or module.startswith(prefix + ".")]
    return STAGE_OF_PREFIX[max(matches, key=len)] if matches else None


def imported_modules(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import anywhere in the file, relative ones resolved against ``package``.

    ``from a import b`` yields ``a.b``: it is the module when b is a sub-package (``from dicomnode import net``),
    and falls in a's stage when b is a name defined in a.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(path: str, source: str) -> list[str]:
    """Every import of ``source`` (the file at ``path``, relative to the root) that its stage may not make."""
    module = path.removesuffix(".py").replace("/", ".")
    stage = stage_of(module)
    if stage is None:
        return [f"{path}: belongs to no stage (place it in STAGE_OF_PREFIX)"]
    package = module.rsplit(".", 1)[0]
    found: list[str] = []
    for line, imported in imported_modules(ast.parse(source, path), package):
        top = imported.split(".")[0]
        if top in FORBIDDEN_LIBRARIES.get(stage, ()):
            found.append(f"{path}:{line} imports {imported} ({stage} may not use {top})")
        if top not in PACKAGES:
            continue
        target = stage_of(imported)
        if target is None:
            found.append(f"{path}:{line} imports {imported} (part of no stage)")
        elif target != stage and target not in ALLOWED[stage]:
            found.append(f"{path}:{line} imports {imported} ({stage} may not import {target})")
    return found


def project_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_every_import_goes_down() -> None:
    found: list[str] = []
    for path in project_files():
        found += violations(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    assert not found, "imports against the architecture:\n" + "\n".join(found)


def test_checker_reports_what_it_must() -> None:
    upward = "import os\n\ndef load():\n    from dicomnode.jobs import tasks\n"
    assert violations("dicomnode/io/x.py", upward) == [
        "dicomnode/io/x.py:4 imports dicomnode.jobs.tasks (dicomnode.io may not import dicomnode.jobs)"
    ]
    assert violations("dicomnode/store/x.py", "from dicomnode import net\n") == [
        "dicomnode/store/x.py:1 imports dicomnode.net (dicomnode.store may not import dicomnode.net)"
    ]
    assert violations("dicomnode/io/contours/x.py", "from ...store import durable\n") == [
        "dicomnode/io/contours/x.py:1 imports dicomnode.store.durable (dicomnode.io may not import dicomnode.store)"
    ]
    assert violations("reports/web/x.py", "from dicomnode.net import scu\n") == [
        "reports/web/x.py:1 imports dicomnode.net.scu (reports.web may not import dicomnode.net)"
    ]
    assert violations("inference/x.py", "import pynetdicom\n") == [
        "inference/x.py:1 imports pynetdicom (inference may not use pynetdicom)"
    ]
    assert violations("dicomnode/new_stage/x.py", "") == [
        "dicomnode/new_stage/x.py: belongs to no stage (place it in STAGE_OF_PREFIX)"
    ]
    assert violations("dicomnode/jobs/x.py", "from dicomnode.io import classify\nfrom . import tasks\n") == []
    assert len(project_files()) > 100  # the real test looks at the real files
