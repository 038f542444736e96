"""The four packages import in one direction only (DESIGN.md section 1)."""

import ast
import importlib
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
# Third-party imports the model packages may use (DESIGN.md: torch, einops, lightning, vector-quantize-pytorch).
MODEL_THIRD_PARTY = {"torch", "einops", "lightning", "vector_quantize_pytorch", "numpy", "safetensors", "PIL"}
STDLIB_PREFIXES = {"__future__", "math", "dataclasses", "typing", "pathlib", "collections", "functools", "os"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    for path in (REPO / package).rglob("*.py"):
        ours = _imports(path) & set(PACKAGES)
        wrong = ours - ALLOWED[package]
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}, against the layering of DESIGN.md"


@pytest.mark.parametrize("package", ["tokenizer", "sequence_model"])
def test_model_packages_use_only_the_model_stack(package):
    import sys

    stdlib = set(sys.stdlib_module_names) | STDLIB_PREFIXES
    for path in (REPO / package).rglob("*.py"):
        extra = _imports(path) - stdlib - MODEL_THIRD_PARTY - set(PACKAGES)
        assert not extra, f"{path.relative_to(REPO)} imports {sorted(extra)}; model packages stay on the model stack"


def test_scaling_fits_and_plots_without_torch():
    # DESIGN.md: scaling/ reads records and writes fits, plots and reports; training is iris_wm's.
    for path in (REPO / "scaling").rglob("*.py"):
        heavy = _imports(path) & {"torch", "lightning", "einops", "transformers"}
        assert not heavy, f"{path.relative_to(REPO)} imports {sorted(heavy)}; scaling/ must not need torch"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_resolve_to_this_repository(package):
    # A PyPI package called `tokenizer` exists: make sure ours is the one imported.
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO / package
