"""Data flows one way (DESIGN.md principle 2): a package imports only from the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "spikeforge"

LOWER = {
    "core": set(),
    "dynamics": {"core"},
    "sim": {"core", "dynamics"},
    "kernels": {"core", "dynamics", "sim"},
    "analog": {"core"},
    "nn": {"core", "dynamics", "sim", "kernels", "analog"},
    "graph": {"core", "dynamics", "sim", "nn"},
    "targets": {"core", "dynamics", "sim", "graph"},
    "export": {"core", "dynamics", "sim", "nn", "graph"},
    "encode": {"core"},
    "data": {"core"},
    "viz": {"core"},
    "train": {"core", "dynamics", "sim", "kernels", "nn", "encode", "data", "viz", "graph", "targets"},
    "cli": {"core", "dynamics", "sim", "kernels", "nn", "encode", "data", "viz", "train", "targets", "graph",
            "export", "metrics"},
    "metrics": {"core", "dynamics", "sim", "nn", "encode"},
}


def _imported_packages(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("spikeforge."):
                found.add(node.module.split(".")[1])
            elif node.level >= 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level >= 2:
                found.update(alias.name for alias in node.names)
            elif node.level == 1:
                found.add(package)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("spikeforge."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_package_is_classified():
    packages = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LOWER), f"classify new packages in LOWER: {packages ^ set(LOWER)}"


def test_imports_flow_one_way():
    violations = []
    for package, allowed in LOWER.items():
        for path in (PKG / package).rglob("*.py"):
            for imported in _imported_packages(path, package) - {package}:
                if imported in LOWER and imported not in allowed:
                    violations.append(f"{path.relative_to(PKG)} imports spikeforge.{imported}")
    assert not violations, "upward imports:\n" + "\n".join(violations)
