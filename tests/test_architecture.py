"""The import rules of docs/architecture.md: every module of src/ntkdr imports only the rooms
its own room may use (parsed with ``ast``, function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ntkdr"

BASE = ("ntkdr._numerics", "ntkdr.validation", "ntkdr.memory", "ntkdr.io")
GROUP = ("ntkdr.training.distributed", "ntkdr.training.collectives")  # process-group helpers
# room (longest prefix wins) -> the ntkdr modules / packages it may import
ALLOWED: dict[str, tuple[str, ...]] = {
    "ntkdr._numerics": (),
    "ntkdr.io": (),
    "ntkdr.memory": (),
    "ntkdr.validation": ("ntkdr.memory",),
    "ntkdr.data": (*BASE, "ntkdr.data"),
    "ntkdr.sketches": (*BASE, "ntkdr.sketches"),
    # kernels may apply a sketch to their inputs first (the kernel of S x)
    "ntkdr.kernels": (*BASE, "ntkdr.sketches", "ntkdr.kernels", *GROUP),
    "ntkdr.nets": (*BASE, "ntkdr.sketches", "ntkdr.nets"),
    "ntkdr.theory": (*BASE, "ntkdr.sketches", "ntkdr.theory"),
    "ntkdr.training.distributed": (*BASE, "ntkdr.training.distributed"),
    "ntkdr.training.collectives": (*BASE, *GROUP),
    "ntkdr.training": (
        *BASE,
        "ntkdr.sketches",
        "ntkdr.kernels",
        "ntkdr.nets",
        "ntkdr.theory",
        "ntkdr.training",
    ),
    "ntkdr.studies": (
        *BASE,
        "ntkdr.sketches",
        "ntkdr.kernels",
        "ntkdr.nets",
        "ntkdr.theory",
        "ntkdr.training",
        "ntkdr.studies",
    ),
    "ntkdr.regression": (*BASE, "ntkdr.sketches", "ntkdr.kernels", "ntkdr.regression", *GROUP),
    "ntkdr.experiment": (
        *BASE,
        "ntkdr.data",
        "ntkdr.sketches",
        "ntkdr.kernels",
        "ntkdr.nets",
        "ntkdr.theory",
        "ntkdr.training",
        "ntkdr.regression",
        "ntkdr.experiment",
    ),
    "ntkdr.predict": (*BASE, "ntkdr.kernels", "ntkdr.predict"),
    # one layer description -> an nn.Module and its analytic kernel
    "ntkdr.stax": (*BASE, "ntkdr.sketches", "ntkdr.kernels", "ntkdr.nets", "ntkdr.stax"),
    "ntkdr.cli": ("ntkdr",),  # the top room may use everything
    # the package itself (lazy exports) and the modules kept at their old paths
    "ntkdr.__init__": ("ntkdr",),
    "ntkdr.__main__": ("ntkdr.cli",),
    "ntkdr.models": ("ntkdr.nets",),
    "ntkdr.empirical": ("ntkdr.nets",),
    "ntkdr.train": ("ntkdr.training",),
    "ntkdr.distributed": ("ntkdr.training.distributed",),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports ``pkg.sub`` when that is a module, else names of pkg
            for a in node.names:
                sub = SRC.parent.joinpath(*f"{mod}.{a.name}".split("."))
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                top = mod == "ntkdr"  # ``from ntkdr import __version__``: a name of the package
                out.append((node.lineno, f"{mod}.{a.name}" if is_module or top else mod))
    return out


def _room(name: str) -> str:
    if name == "ntkdr":
        return "ntkdr.__init__"
    return max((r for r in ALLOWED if name == r or name.startswith(r + ".")), key=len)


def _allowed(target: str, allowed: tuple[str, ...]) -> bool:
    return (
        any(target == a or target.startswith(a + ".") for a in allowed)
        or target == "ntkdr.__version__"
    )


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_room():
    assert MODULES
    for path in MODULES:
        _room(_module_name(path))  # raises ValueError (max of nothing) for a module without one


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_rooms(path):
    name = _module_name(path)
    room = _room(name)
    bad = []
    for line, target in _imports(path, name):
        if target == "argparse" and room != "ntkdr.cli":
            bad.append(f"line {line}: argparse (the command line lives in ntkdr.cli)")
        if target.startswith("ntkdr.cli") and room != "ntkdr.cli" and room != "ntkdr.__main__":
            bad.append(f"line {line}: {target} (nothing below the command line imports it)")
        elif (target == "ntkdr" or target.startswith("ntkdr.")) and not _allowed(
            target, ALLOWED[room]
        ):
            bad.append(f"line {line}: {target} (room {room} may import {ALLOWED[room]})")
    assert not bad, f"{name} imports outside its room:\n" + "\n".join(bad)


def test_no_module_over_500_lines_and_a_one_sentence_docstring():
    for path in MODULES:
        text = path.read_text()
        assert text.count("\n") <= 500, f"{path.relative_to(SRC)} has over 500 lines"
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(text))
        assert doc, f"{path.relative_to(SRC)} has no module docstring"
        assert "SPEC" not in text, f"{path.relative_to(SRC)} cites SPEC"


def test_the_rule_catches_a_violation(tmp_path):
    bad = SRC / "sketches" / "base.py"
    imports = dict((t, line) for line, t in _imports(bad, "ntkdr.sketches.base"))
    assert "ntkdr.validation" in imports
    assert not _allowed("ntkdr.cli.report", ALLOWED[_room("ntkdr.sketches.base")])
    assert not _allowed("ntkdr.training", ALLOWED[_room("ntkdr.kernels.relu")])
