"""The architecture of the README's Layout section, checked on the source: four packages importing in one
direction, and inside iris_wm layers whose imports flow down only, with no cycle, and the command line a leaf.
Every import counts, also one inside a function."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("iris_wm", "tokenizer", "sequence_model", "scaling")
# Which of our own packages each package may import.
ALLOWED = {
    "iris_wm": {"iris_wm", "tokenizer", "sequence_model", "scaling"},
    "tokenizer": {"tokenizer"},
    "sequence_model": {"sequence_model"},
    "scaling": {"scaling"},
}
# Third-party imports the model packages may use: torch, einops, lightning, vector-quantize-pytorch and numerics.
MODEL_THIRD_PARTY = {"torch", "einops", "lightning", "vector_quantize_pytorch", "numpy", "safetensors", "PIL"}
STDLIB_PREFIXES = {"__future__", "math", "dataclasses", "typing", "pathlib", "collections", "functools", "os"}
# The layers of iris_wm, bottom first (README, Layout). A layer imports only layers below it and itself;
# layers of one rank (train, evaluate) do not import each other.
LAYERS = [("runtime",), ("envs",), ("data",), ("agent",), ("hub",), ("train", "evaluate"), ("scaling",), ("cli",)]
RANK = {layer: rank for rank, names in enumerate(LAYERS) for layer in names}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imported(path: Path) -> list[tuple[str, int]]:
    """``(module, line)`` for every import in ``path``, at any depth; ``from a import b`` gives ``a.b`` when that is
    a module of ours, else ``a``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(REPO)}:{node.lineno} uses a relative import; import absolutely"
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (REPO / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    REPO / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                found.append((candidate if is_module else node.module, node.lineno))
    return found


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name, _ in _imported(path)}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    for path in _sources(package):
        ours = _imports(path) & set(PACKAGES)
        wrong = ours - ALLOWED[package]
        assert not wrong, (
            f"{path.relative_to(REPO)} imports {sorted(wrong)}, against the layering of the README's Layout"
        )


@pytest.mark.parametrize("package", ["tokenizer", "sequence_model"])
def test_model_packages_use_only_the_model_stack(package):
    stdlib = set(sys.stdlib_module_names) | STDLIB_PREFIXES
    for path in _sources(package):
        extra = _imports(path) - stdlib - MODEL_THIRD_PARTY - set(PACKAGES)
        assert not extra, f"{path.relative_to(REPO)} imports {sorted(extra)}; model packages stay on the model stack"


def test_scaling_fits_and_plots_without_torch():
    # scaling/ reads records and writes fits, plots and reports; training is iris_wm's.
    for path in _sources("scaling"):
        heavy = _imports(path) & {"torch", "lightning", "einops", "transformers"}
        assert not heavy, f"{path.relative_to(REPO)} imports {sorted(heavy)}; scaling/ must not need torch"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_resolve_to_this_repository(package):
    # A PyPI package called `tokenizer` exists: make sure ours is the one imported.
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO / package


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "iris_wm" else None


def test_every_iris_wm_module_lives_in_a_ranked_layer():
    for path in _sources("iris_wm"):
        name = _module_name(path)
        if name == "iris_wm":
            continue
        assert _layer(name) in RANK, f"{path.relative_to(REPO)} is in no layer of {sorted(RANK)}: move it into one"


def test_iris_wm_imports_flow_down_its_layers():
    for path in _sources("iris_wm"):
        here = _module_name(path)
        mine = _layer(here)
        for target, line in _imported(path):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if target.split(".")[0] == "scaling":
                assert mine == "scaling", f"{where}: only iris_wm.scaling uses the top-level scaling package"
            if not target.startswith("iris_wm"):
                continue
            assert target != "iris_wm" or here == "iris_wm", f"{where}: import from the layer, not the package map"
            theirs = _layer(target)
            if mine is None or theirs is None or theirs == mine:
                continue
            assert theirs != "cli", f"{where}: nothing imports the command line"
            assert RANK[theirs] < RANK[mine], (
                f"{where}: {mine} (rank {RANK[mine]}) may not import {theirs} "
                f"(rank {RANK[theirs]}); imports flow down {[n for names in LAYERS for n in names]}"
            )


def test_iris_wm_has_no_import_cycle():
    graph = {_module_name(p): {t for t, _ in _imported(p) if t.startswith("iris_wm.")} for p in _sources("iris_wm")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [node, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if state.get(target) is None and target in graph:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_package_map_names_modules_that_exist():
    import iris_wm

    for name in iris_wm.__all__:
        assert getattr(iris_wm, name) is not None, name
    assert "cli" not in " ".join(iris_wm._PUBLIC.values()).split("."), "the map never points into cli/"


@pytest.mark.parametrize("package", PACKAGES)
def test_files_stay_small_and_are_not_named_after_a_neighbour(package):
    for path in _sources(package):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines (at most {MAX_LINES}): split it"
        neighbours = {p.stem for p in path.parent.glob("*.py")} - {path.stem, "__init__"}
        prefixed = [n for n in neighbours if path.stem.startswith(f"{n}_")]
        assert not prefixed, f"{path.relative_to(REPO)} is named after its neighbour {prefixed}: give it a folder"
