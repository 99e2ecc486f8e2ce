"""The extension modules' .pyi stubs (fastflow/_*.pyi) name what the compiled modules have, and all of it."""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

STUBS = sorted((Path(__file__).resolve().parent.parent / "fastflow").glob("_*.pyi"))


def declared(body) -> set[str]:
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")
            and not inspect.ismodule(getattr(obj, name))}


def test_every_extension_has_a_stub():
    assert {p.stem for p in STUBS} == {"_decode", "_tcpstate", "_tcpflows", "_dgram", "_sha1", "_address_text"}


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.stem)
def test_stub_matches_the_module(stub):
    module = importlib.import_module(f"fastflow.{stub.stem}")
    tree = ast.parse(stub.read_text())
    top = declared(tree.body)
    assert top == public(module) - {"annotations"}, stub.name
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name)
            members = declared(node.body) - {"__init__"}
            assert members == public(cls), f"{stub.name}: {node.name}"
