"""Test set-up: the tiers, and (through devices.py, imported first) the devices.

Tiers are pytest markers (declared in pyproject.toml):
    (none)   the default tier: fast checks of every kernel, face and file format
    slow     CMake builds, nvcc compiles, torch.compile, demo pipelines and the larger
             Triton-interpreter sets; CI runs them, `./dev.sh test -m "not slow"` leaves them out
    gpu      needs a CUDA GPU; skipped, with the reason, without one
"""
import pytest

import devices  # noqa: F401  (first: sets TRITON_INTERPRET before anything imports triton)


def pytest_collection_modifyitems(config, items):
    if devices.HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
