"""The scenario-format reference keeps up with the loader: every field it reads is documented."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

from testbed.core import scenario

# the loader is a package split by object kind: walk every module of it
MODULES = [
    importlib.import_module(f"{scenario.__name__}.{info.name}")
    for info in pkgutil.iter_modules(scenario.__path__)
]

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "scenario-format.md"


def _names(node: ast.expr) -> set[str]:
    """Field names in a mapping() argument: a tuple of strings, _words("..."), *CONSTANT."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List)):
        return {n for item in node.elts for n in _names(item)}
    if isinstance(node, ast.Starred):
        return _names(node.value)
    if isinstance(node, ast.Name):
        value = next((getattr(m, node.id) for m in MODULES if hasattr(m, node.id)), ())
        return {v for v in value if isinstance(v, str)}
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_words":
        return set(node.args[0].value.split())  # type: ignore[attr-defined]
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant)}
    return set()


def loader_fields() -> set[str]:
    """Every field name the loader accepts or refuses by name (`.mapping(known, ...)`)."""
    trees = [ast.parse(Path(m.__file__).read_text()) for m in MODULES]
    fields: set[str] = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "mapping":
            if node.args:
                fields |= _names(node.args[0])
            for kw in node.keywords:
                if kw.arg == "unsupported":
                    fields |= _names(kw.value)
            if len(node.args) > 2:
                fields |= _names(node.args[2])
    constants = {k: v for m in MODULES for k, v in vars(m).items()}
    for name, value in constants.items():  # refused fields kept in module constants
        if name.endswith("_UNSUPPORTED") and isinstance(value, dict):
            fields |= set(value)
    return fields


def test_the_walk_finds_the_fields_it_should():
    fields = loader_fields()
    assert {"externalTrafficPolicy", "nodePort", "whatIf", "podAntiAffinity", "share"} <= fields
    assert {"hostNetwork", "externalName"} <= fields  # refused ones too
    assert len(fields) > 100


def test_every_field_the_loader_reads_is_in_the_reference():
    words = set(re.findall(r"[A-Za-z][A-Za-z0-9]*", REFERENCE.read_text()))
    missing = sorted(loader_fields() - words)
    assert not missing, f"docs/scenario-format.md does not mention: {', '.join(missing)}"


README = ROOT / "README.md"
LAYERS = ("live", "kernel", "verdict", "kubeproxy", "core")


def _rooms() -> dict[str, str]:
    """The README's "What lives where" picture: layer -> the text of its row."""
    text = README.read_text().split("What lives where:", 1)[1].split("```")[1]
    rows: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            current = line.split()[0].rstrip("/")
            if current == "front":
                current = "front ends"
        rows[current] = rows.get(current, "") + " " + line
    return rows


def test_the_readme_names_every_module_in_its_layer():
    """A contributor reads the layout first: it must list what each layer holds, all of it."""
    rows = _rooms()
    for layer in LAYERS:
        package = ROOT / "testbed" / layer
        names = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
        names |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
        words = set(re.findall(r"[\w/]+", rows[layer].replace(".py", "")))
        assert names <= words, f"README's {layer}/ row misses {sorted(names - words)}"
