"""The house rules, checked on the code: rooms in data-flow order, imports only downward, no circle, small modules.

Every `distill.*` import is read from the source (module level and inside functions alike, `TYPE_CHECKING` blocks
included), so the test sees what a reader of the code sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "distill"

# The floors, lowest first: the data-flow order of the docs. A module may import from its own floor or below.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "trajectory", "templates", "tokens", "redact", "schema", "registry", "tool_config", "pool_config",
     "tool_sources",
     "judge_config", "config", "endpoint", "atomic_files", "run_folder"),
    ("formats",),
    ("teachers",),
    ("agent",),
    ("generation",),
    ("validation",),
    ("publishing", "finetuning", "training"),
    ("evaluation",),
    ("reporting",),
    ("cli_generate", "cli", "__init__"),
]
MAX_LINES = 400


def _room(module: str) -> str:
    """distill.generation.export -> generation; distill.config -> config; distill -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(room: str) -> int:
    for number, rooms in enumerate(FLOORS):
        if room in rooms:
            return number
    raise AssertionError(f"distill/{room} is on no floor: add it to FLOORS in {__file__} (in data-flow order)")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "distill")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "distill":
                continue
            for alias in node.names:  # `from distill.x import y`: y may be a submodule
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in out if name != module}


MODULES = _modules()
GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_room_is_on_a_floor() -> None:
    rooms = {_room(m) for m in MODULES}
    for room in rooms:
        _floor(room)


def test_no_import_runs_up_a_floor() -> None:
    upward = [
        f"{m} (floor {_floor(_room(m))}) imports {target} (floor {_floor(_room(target))})"
        for m, targets in GRAPH.items()
        for target in targets
        if _floor(_room(target)) > _floor(_room(m))
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    """Depth-first search over the module graph; a package's __init__ counts as importing nothing it re-exports
    lazily (function-level imports are arrows too)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target not in GRAPH:
                continue
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_package_face_imports_no_stage_at_import_time() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top_level = [
        node for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distill")
    ]
    assert not top_level, [ast.unparse(n) for n in top_level]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small_and_says_what_it_owns(module: str) -> None:
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path} has {lines} lines (at most {MAX_LINES}): split it by what it owns"
    assert ast.get_docstring(ast.parse(text)), f"{path} has no module docstring saying what it owns"
