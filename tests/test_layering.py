"""The layers are one-way (api -> serving -> upstream) and the lower two never need Flask, so they can be used and
tested without an app: enforced on the imports themselves, not on a convention."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import app

APP = Path(app.__file__).parent
WEB = ("flask", "werkzeug", "flask_cors")
# What each layer may not import, on top of the web framework: anything above it.
ABOVE = {
    "serving": ("app.api", "app.factory", "app.streaming", "app.error_handlers", "app.observability", "app.metrics",
                "app.auth"),
    # app.routes (OpenAI-compatible upstreams) is a use case beside app.serving: the same rules.
    "routes": ("app.api", "app.factory", "app.streaming", "app.error_handlers", "app.observability", "app.metrics",
               "app.auth"),
    "upstream": ("app.api", "app.factory", "app.streaming", "app.error_handlers", "app.observability",
                 "app.metrics", "app.auth", "app.serving", "app.errors"),
}


def modules(layer: str) -> list[str]:
    """Every module of the layer, in its subpackages too."""
    return [info.name for info in pkgutil.walk_packages([str(APP / layer)], prefix=f"app.{layer}.")
            if not info.ispkg]


def imported_names(module: str) -> set[str]:
    """Every module name an import statement in `module` names, wherever the statement is (a lazy import too)."""
    path = APP.joinpath(*module.split(".")[1:]).with_suffix(".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


@pytest.mark.parametrize("module", modules("serving") + modules("routes") + modules("upstream") + ["app.errors"])
def test_no_module_below_the_api_imports_flask_or_a_layer_above(module):
    layer = "serving" if module == "app.errors" else module.split(".")[1]
    forbidden = WEB + ABOVE[layer]
    assert not {name for name in imported_names(module) if is_under(name, forbidden)}


def test_importing_every_serving_module_loads_no_flask():
    """Indirect imports count too: a fresh interpreter imports all of serving/ and upstream/, then Flask, werkzeug
    and the app's Flask-side modules must still be absent."""
    names = modules("serving") + modules("routes") + modules("upstream") + ["app.errors"]
    script = (f"import importlib, sys\nfor name in {names!r}: importlib.import_module(name)\n"
              "print('\\n'.join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=APP.parent).stdout.split()
    assert "app.serving.cluster" in loaded  # the imports really ran
    assert not [name for name in loaded if is_under(name, WEB + ABOVE["serving"])]


def test_the_check_sees_an_import_of_flask(tmp_path, monkeypatch):
    """The AST scan is not vacuous: a module that imports Flask inside a function is caught."""
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "leaky.py").write_text("def f():\n    from flask import request\n    return request\n")
    monkeypatch.setattr(sys.modules[__name__], "APP", tmp_path)
    assert modules("serving") == ["app.serving.leaky"]
    assert is_under("flask", WEB) and "flask" in imported_names("app.serving.leaky")
