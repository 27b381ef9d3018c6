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


# ------------------------------------------------------------------ the vectorized path, on the CPU

HOST_HARNESS = ROOT / "tests" / "cpp" / "lrn_pool_vec_host.cu"


@pytest.fixture(scope="module")
def vec_host(tmp_path_factory):
    """tests/cpp/lrn_pool_vec_host.cu built with nvcc: the vectorized path's thread body run
    thread by thread on the CPU."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    exe = tmp_path_factory.mktemp("vec_host") / "lrn_pool_vec_host"
    cmd = [NVCC, "-std=c++17", "-arch=sm_90", "-O2", f"-I{CSRC}", str(HOST_HARNESS), "-o",
           str(exe)]
    result = _run(cmd)
    assert result.returncode == 0, f"nvcc failed: {' '.join(cmd)}\n{result.stderr}{result.stdout}"
    return exe


@pytest.mark.slow
@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("pool", [(3, 2, 0), (3, 2, 1), (2, 2, 0)], ids=["3-2", "3-2-pad1", "2-2"])
def test_vectorized_path_matches_the_reference(vec_host, tmp_path, dtype, order, pool):
    # 24 channels: 3 runs of 8 halves (or 6 of 4 floats), so every run has a neighbour missing
    # on some side or both; a 9 x 11 map, so windows are clipped at the bottom and right.
    import numpy as np
    import torch

    from cnnxfer.ops import reference
    from cnnxfer.ops.geometry import pooled_length

    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    n, c, h, w = 2, 24, 9, 11
    kernel, stride, pad = pool
    alpha, beta, k = 0.5, 0.75, 2.0  # strong LRN, so a wrong neighbour shows
    oh = pooled_length(h, kernel, stride, pad, pad, False)
    ow = pooled_length(w, kernel, stride, pad, pad, False)
    x = torch.randn((n, h, w, c), generator=torch.Generator().manual_seed(3))
    x = x.to(torch_dtype).float()  # the harness rounds to dtype; the reference sees the same
    x.numpy().tofile(tmp_path / "in.bin")
    cmd = [str(vec_host), dtype, str(int(order == "pool_lrn")), *map(str, (n, c, h, w, kernel,
           stride, pad, oh, ow, alpha, beta, k)), str(tmp_path / "in.bin"),
           str(tmp_path / "out.bin")]
    result = _run(cmd)
    assert result.returncode == 0, f"{' '.join(cmd)}: rc {result.returncode} {result.stderr}"
    got = torch.from_numpy(np.fromfile(tmp_path / "out.bin", dtype="float32"))
    got = got.view(n, oh, ow, c).permute(0, 3, 1, 2).double()
    expected = reference.relu_lrn_maxpool(x.permute(0, 3, 1, 2).double(), 5, alpha, beta, k,
                                          kernel, stride, pad, False, order)
    tolerance = {"f32": 1e-6, "f16": 1e-3, "bf16": 8e-3}[dtype]
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    assert error < tolerance, error
