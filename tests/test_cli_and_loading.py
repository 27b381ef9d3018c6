"""The `cnnxfer` command and the compiled library's loader."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cnnxfer import cli
from cnnxfer.ops import library


@pytest.mark.slow
def test_check_runs_the_fused_op_and_prints_ratio(capsys):
    assert cli.main(["check", "--batch", "2", "--repeats", "1", "--cpu", "--no-pipeline"]) == 0
    out = capsys.readouterr().out
    assert "max abs error vs float64 reference" in out
    assert "cnnxfer is" in out and "faster" in out
    assert "feature pipeline" not in out


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_check_pipeline_compares_features_with_the_reference(capsys, dtype):
    assert cli.main(["check", "--batch", "2", "--repeats", "1", "--cpu", "--width", "0.125",
                     "--check", "3", "--dtype", dtype]) == 0
    out = capsys.readouterr().out
    assert "feature pipeline: 500x375 JPEG -> 496 multi-scale patches" in out
    assert "relative error of the first 3 patches" in out and "s/image" in out


def test_check_rejects_bad_batch():
    with pytest.raises(SystemExit):
        cli.main(["check", "--batch", "0"])


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "cnnxfer.cli", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "demo" in result.stdout and "check" in result.stdout


def test_missing_library_says_why_and_how_to_fix(monkeypatch):
    import cnnxfer

    # `from . import _C` then finds no attribute and a None module entry: an ImportError
    monkeypatch.delattr(cnnxfer, "_C", raising=False)  # set once the library has loaded
    monkeypatch.setitem(sys.modules, "cnnxfer._C", None)
    monkeypatch.setattr(library, "_loaded", False)  # as in a fresh process
    with pytest.raises(library.ExtensionError) as info:
        library.load()
    message = str(info.value)
    assert "cnnxfer._C" in message and "failed to load" in message
    assert "pip install --no-build-isolation -e ." in message


def test_library_built_for_another_torch_is_refused(monkeypatch):
    from cnnxfer import _C

    monkeypatch.setattr(_C, "torch_version", "0.0.1")
    monkeypatch.setattr(library, "_loaded", False)  # as in a fresh process
    with pytest.raises(library.ExtensionError, match="built against torch 0.0.1"):
        library.load()
