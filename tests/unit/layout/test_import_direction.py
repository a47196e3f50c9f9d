"""The layers import one way: lorafleet/ (the application) -> services/ -> shared/, never back.

Read from the source with `ast` (no import runs), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
APP_MODULES = {p.stem for p in (ROOT / "lorafleet").glob("*.py") if p.stem != "__init__"} | {
    p.name for p in (ROOT / "lorafleet").iterdir() if p.is_dir() and (p / "__init__.py").is_file()
}
# What each layer must not import (as `lorafleet.<first part>`).
FORBIDDEN = {
    "shared": {"services"} | APP_MODULES,
    "services": APP_MODULES,
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "lorafleet":  # `from lorafleet import demo`
                found += [(node.lineno, f"lorafleet.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for lineno, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "lorafleet" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
            if parts[0] in ("services", "shared") and parts[0] != layer and layer == "shared":
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {module} (use lorafleet.{module})")
    return bad


def test_the_application_layer_is_what_the_rule_names():
    # The rule would pass vacuously if the application's modules were not found.
    assert {"cli", "commands", "up", "fleet", "demo"} <= APP_MODULES


def test_shared_imports_neither_services_nor_the_application():
    assert violations("shared") == []


def test_services_do_not_import_the_application():
    assert violations("services") == []


def test_the_check_catches_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lorafleet.services.registry import core\n    import lorafleet.demo.run\n")
    modules = [m for _, m in imported_modules(bad)]
    assert "lorafleet.services.registry" in modules and "lorafleet.demo.run" in modules


def test_shared_has_no_command_line_or_demo_module():
    names = {p.stem for p in (ROOT / "shared").rglob("*.py")}
    assert not names & {"cli", "cli_bus", "cli_up", "demo", "demo_cli", "traffic"}
