"""The Target interface (bakery.targets.base.Target) covers every step the bake calls on a target, the
Azure-only three-step smoke test included, and both targets implement it with the same parameters: no
caller needs ``Any`` or a ``type: ignore`` to reach a target's step."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from bakery.targets.azure import AzureTarget
from bakery.targets.base import Target
from bakery.targets.local import LocalTarget

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "bakery"


def interface() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(Target).items()
            if callable(member) and not name.startswith("_")}


def called_on_targets(path: Path) -> set[str]:
    """Methods ``path`` calls on a variable or attribute named ``target`` (``target.x(...)``)."""
    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (isinstance(owner, ast.Name) and owner.id == "target") or (
                    isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "get_target"):
                calls.add(node.func.attr)
    return calls


def test_the_interface_has_every_step_the_bake_calls_on_a_target():
    steps = interface()
    for step in ("smoke_setup", "smoke_check", "smoke_teardown", "close"):
        assert step in steps, f"Target has no {step}"
    called = called_on_targets(PLUGINS / "bake.py")
    assert {"smoke_setup", "smoke_check", "smoke_teardown", "publish", "prune"} <= called
    assert called <= set(steps), f"bakery/bake.py calls {sorted(called - set(steps))} outside the Target interface"


@pytest.mark.parametrize("cls", [AzureTarget, LocalTarget])
def test_each_target_implements_the_interface_with_its_parameters(cls):
    assert Target in cls.__mro__  # explicitly: it inherits the defaults of the steps it does not need
    for name, sig in interface().items():
        impl = inspect.signature(getattr(cls, name))
        want = [(p.name, p.kind) for p in sig.parameters.values()]
        have = [(p.name, p.kind) for p in impl.parameters.values()]
        extra = [p for p in impl.parameters.values() if p.name not in sig.parameters]
        assert [h for h in have if h[0] in sig.parameters] == want, (
            f"{cls.__name__}.{name}{impl} differs from Target.{name}{sig}")
        assert all(p.default is not p.empty for p in extra), f"{cls.__name__}.{name}: {extra} need a default"


def test_the_bake_steps_take_a_target_not_any():
    tree = ast.parse((PLUGINS / "bake.py").read_text())
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for arg in fn.args.args + fn.args.kwonlyargs:
            if arg.arg == "target":
                assert ast.unparse(arg.annotation) in ("Target", "Target | None"), (
                    f"bake.{fn.name}(target: {ast.unparse(arg.annotation)})")


def test_no_type_ignore_around_the_targets():
    files = [PLUGINS / "bake.py", PLUGINS / "janitor.py", *sorted((PLUGINS / "janitor").rglob("*.py")),
             *sorted((PLUGINS / "targets").rglob("*.py")), *sorted((PLUGINS / "operators").rglob("*.py"))]
    found = [f"{p.relative_to(PLUGINS)}:{i}" for p in files if p.is_file()
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"#\s*type:\s*ignore", line)]
    assert found == []
