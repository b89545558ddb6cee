"""The package's layers, as docs/layout.md draws them, read from the source.

Every `import stylekit...` in stylekit/ (module level, inside functions, under TYPE_CHECKING)
is an edge. A part may import itself and the parts on floors below it, never a part on its own
floor or above: `files` knows no networks, `nn` no inference, `train` and `bulk` not each other,
the library no command line. Ray is imported only in `train/`, `bulk/` and `ray_env.py`. Parsed,
not imported: no torch or Ray start, and a deferred import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stylekit"
LAYOUT_PAGE = PACKAGE.parent / "docs" / "layout.md"

# Lowest floor first. A part is a subpackage (`nn`) or a top-level module (`redact`).
FLOORS: list[set[str]] = [
    {"exitcodes"},
    {"__init__", "errors", "options_meta", "stderr_filter"},
    {"redact"},
    {"logs", "nodes"},
    {"files"},
    {"nn"},
    {"infer"},
    {"video"},
    {"ray_env"},
    {"train", "bulk"},
    {"cli"},
    {"commands"},
    {"__main__"},
]
RAY_ALLOWED = {"train", "bulk", "ray_env"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """`stylekit.nn.vgg` -> `nn`; `stylekit.redact` -> `redact`; `stylekit` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def type_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements under `if TYPE_CHECKING:` (for annotations; never run)."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }


def imports(path: Path, runtime_only: bool = False) -> set[str]:
    """The modules `path` imports, each import statement anywhere in the file (with
    `runtime_only`, not those under TYPE_CHECKING)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skip = type_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from stylekit.nn import zoo` imports the module stylekit.nn.zoo
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in SOURCES}


def edges(runtime_only: bool) -> dict[str, set[str]]:
    """module -> the stylekit modules it imports (a package's own __init__ aside)."""
    return {
        name: {
            m
            for m in imports(path, runtime_only)
            if m in MODULES and m != name and not name.startswith(m + ".")
        }
        for name, path in MODULES.items()
    }


EDGES = edges(runtime_only=False)
RUNTIME_EDGES = edges(runtime_only=True)  # a type-only import cannot close an import cycle


def floor(part: str) -> int:
    for i, parts in enumerate(FLOORS):
        if part in parts:
            return i
    pytest.fail(f"stylekit part {part!r} is on no floor: add it to FLOORS and docs/layout.md")


def test_every_part_has_a_floor() -> None:
    for name in MODULES:
        floor(part_of(name))


def test_the_layout_page_names_every_floor() -> None:
    """docs/layout.md's reading order names every part of the package, so the page a new
    engineer reads first cannot leave a floor out."""
    floors = LAYOUT_PAGE.read_text().split("## Floors", 1)[1].split("\n## ", 1)[0]
    missing = [
        p
        for parts in FLOORS
        for p in sorted(parts)
        if p not in {"__init__", "__main__"} and f"`{p}`" not in floors
    ]
    assert not missing, f"docs/layout.md's Floors section does not name {missing}"


def test_parts_import_only_their_own_and_lower_floors() -> None:
    wrong = []
    for name, targets in EDGES.items():
        here = part_of(name)
        for target in targets:
            there = part_of(target)
            if there != here and floor(there) >= floor(here):
                wrong.append(f"{name} imports {target} ({here} is not above {there})")
    assert not wrong, "\n".join(sorted(wrong))


def test_module_imports_have_no_cycle() -> None:
    """No module imports one that imports it back, directly or around a loop (deferred imports
    count: a loop closed inside a function is still a loop; imports for annotations only do
    not run and are left out)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(RUNTIME_EDGES[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_ray_stays_in_train_bulk_and_ray_env() -> None:
    users = {
        part_of(name)
        for name, path in MODULES.items()
        if any(m.split(".")[0] == "ray" for m in imports(path))
    }
    assert users, "no module imports ray: the check reads nothing"
    assert users <= RAY_ALLOWED, f"ray imported outside {sorted(RAY_ALLOWED)}: {sorted(users - RAY_ALLOWED)}"


def test_the_checks_see_the_known_edges() -> None:
    """The parser finds what is there (a check that reads no edges passes anything)."""
    assert "stylekit.files.storage" in EDGES["stylekit.nn.vgg"]
    assert "stylekit.nn.model" in EDGES["stylekit.nn.modelio"]
    assert "stylekit.nn.modelio" in RUNTIME_EDGES["stylekit.bulk.engines.models"]  # a deferred import
    assert "stylekit.bulk.config" in EDGES["stylekit.bulk.plan.layout"]  # for annotations only
    assert "stylekit.bulk.config" not in RUNTIME_EDGES["stylekit.bulk.plan.layout"]


# The bulk job's own floors (docs/layout.md): plan -> engine -> report around one run object.
BULK_FLOORS: list[set[str]] = [
    {"config", "stop"},
    {"plan"},
    {"run", "metrics", "report"},
    {"engines"},
    {"driver"},
    {"night"},
]


def bulk_part(module: str) -> str | None:
    """`stylekit.bulk.plan.lease` -> `plan`; `stylekit.bulk.run` -> `run`; None outside bulk."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "bulk" else None


def test_the_bulk_job_imports_go_one_way_and_its_plan_knows_no_ray() -> None:
    def bulk_floor(part: str) -> int:
        return next(i for i, parts in enumerate(BULK_FLOORS) if part in parts)

    wrong = []
    for name, targets in EDGES.items():
        here = bulk_part(name)
        if here is None:
            continue
        for target in targets:
            there = bulk_part(target)
            if there is not None and there != here and bulk_floor(there) >= bulk_floor(here):
                wrong.append(f"{name} imports {target} ({here} is not above {there})")
    assert not wrong, "\n".join(sorted(wrong))
    plan = [name for name in MODULES if bulk_part(name) == "plan"]
    assert plan, "no module under bulk/plan/: the check reads nothing"
    with_ray = [n for n in plan if any(m.split(".")[0] == "ray" for m in imports(MODULES[n]))]
    assert not with_ray, f"bulk/plan/ imports Ray: {with_ray}"
