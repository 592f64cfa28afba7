"""The package's layers (docs/architecture.md), checked by parsing every import of every module under src/saat.

    foundation (utils, config, errors, checkpoint, runs, _torch_utils, _version)
      -> data -> models -> hashing -> retrieval -> attacks -> defenses -> robustness -> pipelines -> report
      -> reproduce -> cli

A module may import its own component and any component of a lower layer, never a higher one (the foundation
modules may import each other). The package root (``saat/__init__.py``, the Python API facade) sits above all.
The CLI reaches the work only through pipelines, the report and reproduce (the demo among it): from the layers
below the pipelines it imports registries and listings only (UPPERCASE names and ``list_*``), plus the retrieval
metrics that ``saat evaluate-codes`` wraps.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "saat"

LAYERS = {
    "utils": 0, "config": 0, "errors": 0, "checkpoint": 0, "_torch_utils": 0, "_version": 0, "runs": 0,
    "data": 1, "models": 2, "hashing": 3, "retrieval": 4, "attacks": 5, "defenses": 6, "robustness": 7,
    "pipelines": 8, "report": 9, "reproduce": 10, "cli": 11, "__main__": 12,
    "": 13,  # the package root
}
REGISTRY_NAME = re.compile(r"^([A-Z][A-Z_]*|list_\w+)$")


def component(module: str) -> str:
    """'saat.attacks.tha' -> 'attacks'; 'saat' -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, root: Path) -> tuple[str, str]:
    """(module, package) of a file under ``root`` (the saat folder): ('saat.attacks.tha', 'saat.attacks')."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports_of(path: Path, root: Path) -> list[tuple[str, list[str], int]]:
    """(imported saat module, imported names, line) for every import statement, including those inside functions."""
    module, package = module_name(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "saat" or target.startswith("saat."):
                names = [a.name for a in node.names]
                if node.module is None or target == "saat":  # "from . import x": x is a submodule or a name
                    for name in names:
                        sub = f"{target}.{name}"
                        found.append((sub if (root.parent / sub.replace(".", "/")).exists()
                                      or (root.parent / (sub.replace(".", "/") + ".py")).exists() else target,
                                      [name], node.lineno))
                else:
                    found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name == "saat" or a.name.startswith("saat.")]
    return found


def layering_violations(root: Path = SRC) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        module, _ = module_name(path, root)
        mine = component(module)
        if mine not in LAYERS:
            problems.append(f"{module}: component {mine!r} has no layer; add it to LAYERS and docs/architecture.md")
            continue
        for target, names, line in imports_of(path, root):
            theirs = component(target)
            if theirs == mine:
                continue
            if theirs not in LAYERS:
                problems.append(f"{module}:{line} imports {target}, a component with no layer")
            elif LAYERS[theirs] > LAYERS[mine] or (LAYERS[theirs] == LAYERS[mine] and LAYERS[mine] != 0):
                problems.append(f"{module}:{line} imports {target} ({theirs}, layer {LAYERS[theirs]}) from layer "
                                f"{LAYERS[mine]} ({mine})")
            elif mine == "cli" and 1 <= LAYERS[theirs] < LAYERS["pipelines"] and theirs != "retrieval":
                bad = [n for n in names if not REGISTRY_NAME.match(n)]
                if bad or not names:
                    problems.append(f"{module}:{line} imports {', '.join(bad) or target} from {target}: the CLI "
                                    "reaches lower layers through the pipelines (registries and list_* excepted)")
    return problems


def test_no_module_imports_a_higher_layer():
    assert layering_violations() == []


def test_every_source_component_has_a_layer():
    components = {p.name if p.is_dir() else p.stem for p in SRC.iterdir()
                  if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert components <= set(LAYERS), components - set(LAYERS)


@pytest.mark.parametrize("source, expected", [
    ("from ..pipelines.common import load_run\n", "imports saat.pipelines.common (pipelines, layer 8) from layer 1"),
    ("def f():\n    from ..report import build_report\n", "imports saat.report (report, layer 9) from layer 1"),
    ("from saat.attacks import mainstay_codes\n", "imports saat.attacks (attacks, layer 5) from layer 1"),
])
def test_the_check_catches_upward_imports_anywhere_in_a_module(tmp_path, source, expected):
    fake = tmp_path / "saat"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "bad.py").write_text(source)
    problems = layering_violations(fake)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_cli_check_refuses_work_functions_from_below_the_pipelines(tmp_path):
    fake = tmp_path / "saat"
    (fake / "cli").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "cli" / "x.py").write_text("from ..defenses import DEFENSES, list_defenses\n"
                                       "from ..defenses.comdefend import train_comdefend\n")
    problems = layering_violations(fake)
    assert len(problems) == 1 and "train_comdefend" in problems[0], problems
