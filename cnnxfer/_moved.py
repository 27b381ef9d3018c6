"""Module paths of cnnxfer 0.1 that moved in 0.2, when the package was split into its layers,
kept as aliases for one release: `import cnnxfer.patches` still works and gives
cnnxfer.features.grids, with a DeprecationWarning that names the new path. They go in 0.3.

`cnnxfer.weights`, `cnnxfer.voc` and `cnnxfer.store` are not deprecated: they are the documented
short paths to cnnxfer.nets.weights, cnnxfer.data.voc and cnnxfer.data.store. (`cnnxfer.store`
was 0.1's name of the feature files, now cnnxfer.features.files; their functions are still
found under it, with a DeprecationWarning, until 0.3.)
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old path -> new path
MOVED = {
    "cnnxfer.patches": "cnnxfer.features.grids",
    "cnnxfer.images": "cnnxfer.features.images",
    "cnnxfer.pooling": "cnnxfer.ops.geometry",
    "cnnxfer.specs": "cnnxfer.ops.layers",
    "cnnxfer.reference": "cnnxfer.ops.reference",
    "cnnxfer.lrn_pool_backward": "cnnxfer.ops.lrn_pool_backward",
    "cnnxfer._extension": "cnnxfer.ops.library",
    "cnnxfer.preprocessing": "cnnxfer.nets.preprocessing",
    "cnnxfer.onnx_import": "cnnxfer.nets.onnx_import",
}
# short paths that stay
ALIASES = {"cnnxfer.weights": "cnnxfer.nets.weights", "cnnxfer.voc": "cnnxfer.data.voc",
           "cnnxfer.store": "cnnxfer.data.store"}


class _AliasLoader(importlib.abc.Loader):
    """Hands out the module at the new path under the old name (the same module object)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its own name. The import system has just pointed __spec__ at
        # the alias: give the module its own back.
        module.__spec__ = self.own_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname) or ALIASES.get(fullname)
        if new is None:
            return None
        if fullname in MOVED:
            warnings.warn(f"{fullname} moved to {new}; the old path goes in cnnxfer 0.3",
                          DeprecationWarning, stacklevel=_stacklevel())
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


# Frames between the user's code and the warning, besides the import system's own (which
# warnings.warn skips by itself when it counts stacklevel): this package's.
_OURS = (__file__, importlib.__file__, importlib.util.__file__,
         __file__.replace("_moved.py", "__init__.py"))


def _stacklevel() -> int:
    """warnings.warn's stacklevel for the user's import statement or attribute access."""
    frame, level = sys._getframe(2), 2  # the caller of find_spec
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back  # not counted by warnings.warn
            continue
        if name not in _OURS:
            return level
        frame, level = frame.f_back, level + 1
    return 1


def install() -> None:
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())


def attribute(name: str):
    """cnnxfer.<name> for an old or short module name (module __getattr__), else None."""
    full = f"cnnxfer.{name}"
    if full in MOVED or full in ALIASES:
        return importlib.import_module(full)
    return None
