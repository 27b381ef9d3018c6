"""Compile checks for the CUDA sources, runnable without a GPU or a CUDA build of torch.

The kernels in csrc/cuda/*.cu include only CUDA headers, so nvcc alone can compile them; the
plain C++ interface they export is also compiled with the host compiler, as the torch binding
(csrc/cuda/*_binding.cpp) sees it. The tests skip when nvcc or g++ is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
KERNEL = CSRC / "cuda" / "lrn_pool.cu"
INTERFACE = CSRC / "cuda" / "lrn_pool_cuda.h"
# Generous next to the ~10 s a compile takes, yet bounded so a hung compiler fails the test.
TIMEOUT_S = 180

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)


def _cuda_include_dir() -> Path | None:
    """The toolkit's include directory, as nvcc itself resolves it.

    Asking nvcc works when nvcc on PATH is a wrapper script outside the toolkit, where the path of
    the executable says nothing about where the headers are.
    """
    candidates: list[Path] = []
    if NVCC is not None:
        dry = _run([NVCC, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull])
        for match in re.finditer(r'INCLUDES="([^"]*)"', dry.stdout + dry.stderr):
            candidates += [Path(flag[2:]) for flag in match.group(1).split()
                           if flag.startswith("-I")]
        candidates.append(Path(os.path.realpath(NVCC)).parent.parent / "include")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for path in candidates:
        if (path / "cuda_runtime_api.h").is_file():
            return path
    return None


def test_kernel_includes_no_torch_headers():
    # The .cu files must stay compilable by plain nvcc where torch lacks its CUDA build headers.
    includes = re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', KERNEL.read_text(), re.M)
    torch_like = [inc for inc in includes if re.match(r"(torch|ATen|c10)/", inc)]
    assert not torch_like, f"{KERNEL.name} includes torch headers: {torch_like}"


@needs_nvcc
@pytest.mark.slow
def test_lrn_pool_kernel_compiles_with_nvcc(tmp_path):
    obj = tmp_path / "lrn_pool.o"
    # -O3: the nvcc flag setup.py builds the extension with (no fast math: powf stays exact).
    cmd = [NVCC, "-c", "-std=c++17", "-arch=sm_90", "-O3", f"-I{CSRC}",
           str(KERNEL), "-o", str(obj)]
    result = _run(cmd)
    assert result.returncode == 0, (
        f"nvcc failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}{result.stdout}")
    assert obj.is_file() and obj.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(GXX is None, reason="g++ is not on PATH")
def test_lrn_pool_interface_compiles_as_cpp(tmp_path):
    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip("the CUDA toolkit's include directory (cuda_runtime_api.h) was not found")
    # The binding calls the launcher through exactly this signature; a change must show up here.
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include "cuda/lrn_pool_cuda.h"\n'
        "#include <type_traits>\n"
        "using Launch = cudaError_t (*)(const void*, void*, cnnxfer::LrnPoolDType,\n"
        "                               const cnnxfer::LrnPoolLaunchGeometry&, cudaStream_t);\n"
        "static_assert(std::is_same_v<decltype(&cnnxfer::launch_relu_lrn_maxpool), Launch>);\n"
        "static_assert(std::is_trivially_copyable_v<cnnxfer::LrnPoolLaunchGeometry>);\n"
        "int main() {\n"
        "  cnnxfer::LrnPoolLaunchGeometry g{};\n"
        "  g.x_stride[3] = g.y_stride[3] = 1;\n"
        "  return static_cast<int>(cnnxfer::LrnPoolDType::kBFloat16) + static_cast<int>(g.size);\n"
        "}\n"
    )
    compile_probe(probe, cuda_include)


def compile_probe(probe, cuda_include):
    """Compiles a host C++ file against csrc/ and the CUDA headers, as a binding would see them;
    fails the test with the compiler's output."""
    cmd = [GXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}",
           f"-I{cuda_include}", str(probe)]
    result = _run(cmd)
    assert result.returncode == 0, (
        f"g++ failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}{result.stdout}")
