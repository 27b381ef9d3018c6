"""The package's layout: layers that import one way only, a light import that works without the
compiled library, and the 0.1 module paths as deprecated aliases."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import cnnxfer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnxfer"
KERNELS = ROOT / "kernels"

# The layers, bottom first: a module may import cnnxfer modules of its own layer or below.
LAYERS = {"ops": 0, "kernels": 0, "_C": 0, "nets": 1, "features": 2, "transfer": 3, "data": 3,
          "cli": 4}
# What the spec may lean on: a bug in the engine must not be able to hide in the reference.
REFERENCE_MAY_IMPORT = {"cnnxfer.ops.geometry", "cnnxfer.ops.layers", "cnnxfer.ops.max_pool"}
# The engine's modules compute nothing through the reference.
KERNEL_MODULES = ("cnnxfer.kernels.lrn_pool", "cnnxfer.kernels.patches", "cnnxfer.kernels.conv",
                  "cnnxfer.kernels.conv_block")
ENGINE = ("cnnxfer.ops.conv_block", "cnnxfer.nets.engine", *KERNEL_MODULES)
# The modules that need the compiled library to import: the Python side of the compiled ops,
# which library.load() imports after loading it.
NEEDS_LIBRARY = ["cnnxfer.ops.registrations"]
# The Triton kernels may use these leaf modules of ops, never a face.
KERNELS_MAY_IMPORT = {"cnnxfer.ops.geometry", "cnnxfer.ops.checks", "cnnxfer.ops.lrn_pool_backward"}


def _modules() -> dict[str, Path]:
    """Every module of the package (and cnnxfer.kernels) by its dotted name."""
    found = {}
    for base, prefix in ((PACKAGE, "cnnxfer"), (KERNELS, "cnnxfer.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The cnnxfer modules `name` imports, anywhere in its code (function bodies included),
    relative imports resolved; `from package import module` counts as the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = set(_modules()) | {"cnnxfer._C"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from .. import ops` imports the module cnnxfer.ops; `from .ops import LRN` the
            # package cnnxfer.ops
            submodules = {f"{module}.{alias.name}" for alias in node.names} & modules
            found.update(submodules if len(submodules) == len(node.names) else {module})
    return found & modules


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _against_the_layers(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for name, path in modules.items():
        own = _layer(name)
        if own is None:  # cnnxfer/__init__.py and _moved.py sit above every layer
            continue
        for imported in sorted(_imports(name, path)):
            theirs = _layer(imported)
            if theirs is None or theirs > own:
                wrong.append(f"{name} (layer {own}) imports {imported} (layer {theirs})")
    return wrong


def test_layers_import_one_way_only():
    wrong = _against_the_layers(_modules())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_above_can_fail(tmp_path):
    path = tmp_path / "grids.py"
    path.write_text("from ..cli import main\nfrom ..nets import weights\nfrom .. import ops\n"
                    "def f():\n    from cnnxfer import cli\n")
    assert _imports("cnnxfer.features.grids", path) == {"cnnxfer.cli", "cnnxfer.nets.weights",
                                                        "cnnxfer.ops"}
    assert _against_the_layers({"cnnxfer.features.grids": path}) == [
        "cnnxfer.features.grids (layer 2) imports cnnxfer.cli (layer 4)"]


def test_reference_and_engine_stay_apart():
    modules = _modules()
    reference = _imports("cnnxfer.ops.reference", modules["cnnxfer.ops.reference"])
    assert reference <= REFERENCE_MAY_IMPORT, reference - REFERENCE_MAY_IMPORT
    for name in ENGINE:
        assert "cnnxfer.ops.reference" not in _imports(name, modules[name]), name
    for name in KERNEL_MODULES:  # other kernels, or the leaves of ops
        imported = {m for m in _imports(name, modules[name])
                    if not m.startswith("cnnxfer.kernels.")}
        assert imported <= KERNELS_MAY_IMPORT, (name, imported - KERNELS_MAY_IMPORT)


# A fresh interpreter in which cnnxfer._C cannot be imported (as with no build, or a stale one).
_WITHOUT_LIBRARY = textwrap.dedent('''
    import importlib, json, sys, warnings
    attempts = []
    class HideLibrary:
        def find_spec(self, name, path=None, target=None):
            if name == "cnnxfer._C":
                attempts.append(name)
                raise ImportError("cnnxfer._C hidden by the test")
    sys.meta_path.insert(0, HideLibrary())
    warnings.simplefilter("ignore", DeprecationWarning)
    report = {"imported": [], "failed": {}, "needs_library": []}
    for name in json.loads(sys.argv[1]):
        before = len(attempts)
        try:
            importlib.import_module(name)
            report["imported"].append(name)
        except Exception as error:
            report["failed"][name] = f"{type(error).__name__}: {error}"
        if len(attempts) > before:
            report["needs_library"].append(name)

    # What works without a build: everything but the engine's kernels.
    import numpy as np, torch, tempfile, os
    from PIL import Image
    import cnnxfer
    from cnnxfer import features, nets, ops
    work = {}
    work["grid"] = len(features.paper_grid(500, 375))
    folder = tempfile.mkdtemp()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(os.path.join(folder, "a.png"))
    work["image"] = list(features.load_image(os.path.join(folder, "a.png")).shape)
    result = features.ImageFeatures("a", torch.ones(2, 3), torch.zeros(2, 4, dtype=torch.int64))
    features.save_features(os.path.join(folder, "f.safetensors"), [result])
    work["file"] = list(features.load_features(os.path.join(folder, "f.safetensors"))[0][0]
                        .features.shape)
    net = nets.alexnet("alexnet", width=0.125, seed=0)
    nets.weights.save(net, os.path.join(folder, "w.safetensors"))
    net = nets.weights.load(os.path.join(folder, "w.safetensors"))
    x = torch.randn(1, 3, 227, 227)
    work["reference_net"] = list(net(x, "fc7", backend="reference").shape)
    work["reference_op"] = list(ops.relu_lrn_maxpool(torch.randn(1, 4, 9, 9),
                                                     backend="reference").shape)
    errors = {}
    for what, call in (("op", lambda: ops.relu_lrn_maxpool(torch.randn(1, 4, 9, 9))),
                       ("engine", lambda: net(x, "fc7"))):
        try:
            call()
            errors[what] = None
        except ops.ExtensionError as error:
            errors[what] = str(error)
    report["work"], report["errors"] = work, errors
    print(json.dumps(report))
''')


@pytest.mark.slow
def test_every_module_imports_without_the_compiled_library():
    names = [name for name in _modules() if not name.endswith("__main__")]
    names += ["cnnxfer.patches", "cnnxfer.store", "cnnxfer.reference", "cnnxfer.weights"]
    result = subprocess.run([sys.executable, "-c", _WITHOUT_LIBRARY, json.dumps(names)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    kernels = {n for n in report["failed"] if n.startswith("cnnxfer.kernels.")}
    if kernels:  # the Triton kernels need triton, nothing else
        assert all("triton" in report["failed"][n] for n in kernels), report["failed"]
    # Only the Python registrations of the compiled ops need them to exist; the message says why
    assert report["needs_library"] == NEEDS_LIBRARY, report["needs_library"]
    assert set(report["failed"]) == kernels | set(NEEDS_LIBRARY), report["failed"]
    for name in NEEDS_LIBRARY:
        assert "failed to load" in report["failed"][name], report["failed"][name]
    assert report["work"] == {"grid": 496, "image": [3, 20, 30], "file": [2, 3],
                              "reference_net": [1, 512], "reference_op": [1, 4, 4, 4]}
    for what, message in report["errors"].items():  # the kernels say why and how to fix it
        assert message is not None and "failed to load" in message, what
        assert "pip install --no-build-isolation -e ." in message, what


@pytest.mark.parametrize("old,new", sorted(cnnxfer._moved.MOVED.items()))
def test_old_module_paths_are_deprecated_aliases(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = __import__(old, fromlist=["_"])
    assert module is sys.modules[new] and module.__name__ == new
    assert module.__spec__.name == new  # the alias did not relabel the real module
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any(old in m and new in m for m in messages), messages
    assert caught[0].filename == __file__  # the warning points at the importing line


def test_old_attribute_names_and_the_weights_short_path():
    sys.modules.pop("cnnxfer.weights", None)  # imported afresh, through the alias finder
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cnnxfer.weights is not deprecated
        import cnnxfer.weights
        assert cnnxfer.weights is cnnxfer.nets.weights
        assert sys.modules["cnnxfer.weights"] is cnnxfer.nets.weights
    with pytest.warns(DeprecationWarning, match="cnnxfer.ops.reference"):
        sys.modules.pop("cnnxfer.reference", None)
        vars(cnnxfer).pop("reference", None)
        assert cnnxfer.reference is cnnxfer.ops.reference
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cnnxfer.nothing  # noqa: B018


_COMPILE_FIRST = textwrap.dedent('''
    import sys, torch, cnnxfer
    assert "cnnxfer._C" not in sys.modules
    def block(t):
        return cnnxfer.ops.relu_lrn_maxpool(t * 2.0, padding=(0, 0, 1, 1)) + 1.0
    x = torch.randn(2, 8, 13, 13)
    y = torch.compile(block, fullgraph=True)(x)  # the library loads while dynamo traces
    torch.testing.assert_close(y, block(x))
    print("ok", "cnnxfer._C" in sys.modules)
''')


@pytest.mark.slow
def test_a_compiled_first_call_loads_the_library():
    result = subprocess.run([sys.executable, "-c", _COMPILE_FIRST], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["ok", "True"]
