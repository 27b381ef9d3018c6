"""Compile checks for the CUDA extract_patches sources, runnable without a GPU or a CUDA torch.

csrc/cuda/patches.cu includes only CUDA headers (and csrc/resize_taps.h), so nvcc alone compiles
it; the plain C++ interface it exports (patches_cuda.h) is also compiled with the host compiler,
as patches_binding.cpp sees it. The tests skip when nvcc or g++ is missing.
"""
from __future__ import annotations

import re

import pytest

from cnnxfer.ops import checks

from test_cuda_sources import CSRC, GXX, NVCC, _cuda_include_dir, _run, compile_probe

KERNEL = CSRC / "cuda" / "patches.cu"
INTERFACE = CSRC / "cuda" / "patches_cuda.h"
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


def _includes(path):
    return re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', path.read_text(), re.M)


@pytest.mark.parametrize("path", [KERNEL, INTERFACE], ids=lambda p: p.name)
def test_includes_no_torch_headers(path):
    # nvcc must compile these where torch lacks its CUDA build headers.
    torch_like = [inc for inc in _includes(path) if re.match(r"(torch|ATen|c10)/", inc)]
    assert not torch_like, f"{path.name} includes torch headers: {torch_like}"


@needs_nvcc
@pytest.mark.slow
def test_patches_kernel_compiles_with_nvcc(tmp_path):
    obj = tmp_path / "patches.o"
    # -O3: the nvcc flag setup.py builds the extension with. -Xptxas -v reports registers and
    # spills per kernel, checked below.
    cmd = [NVCC, "-c", "-std=c++17", "-arch=sm_90", "-O3", f"-I{CSRC}", "-Xptxas", "-v",
           str(KERNEL), "-o", str(obj)]
    result = _run(cmd)
    log = result.stderr + result.stdout
    assert result.returncode == 0, f"nvcc failed ({result.returncode}): {' '.join(cmd)}\n{log}"
    assert obj.is_file() and obj.stat().st_size > 0
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", log)]
    # a kernel for every (image dtype, output dtype) pair the op accepts, in both variants (with
    # the tap table, and table-free for extreme shrink factors)
    expected = len(checks.IMAGE_DTYPES) * len(checks.FLOAT_DTYPES) * 2
    assert len(spills) == expected, (
        f"expected {expected} kernels in ptxas' report, found {len(spills)}:\n{log}")
    # The register budgets (__launch_bounds__) are chosen to fit without spilling.
    assert not any(spills), f"some kernel spills registers to local memory:\n{log}"


@pytest.mark.slow
@pytest.mark.skipif(GXX is None, reason="g++ is not on PATH")
def test_patches_interface_compiles_as_cpp(tmp_path):
    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip("the CUDA toolkit's include directory (cuda_runtime_api.h) was not found")
    # The binding calls the launcher through exactly this signature and fills the geometry
    # field by field; a change must show up here.
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        '#include "cuda/patches_cuda.h"\n'
        '#include "resize_taps.h"\n'
        "#include <type_traits>\n"
        "using Launch = cudaError_t (*)(const void*, const int64_t*, void*,\n"
        "                               cnnxfer::PatchesInputDType, cnnxfer::PatchesOutputDType,\n"
        "                               const cnnxfer::PatchesLaunchGeometry&, cudaStream_t);\n"
        "static_assert(std::is_same_v<decltype(&cnnxfer::launch_extract_patches), Launch>);\n"
        "static_assert(std::is_trivially_copyable_v<cnnxfer::PatchesLaunchGeometry>);\n"
        "static_assert(cnnxfer::kPatchesInlineChannels >= 4, \"RGBA inline\");\n"
        "int main() {\n"
        "  cnnxfer::PatchesLaunchGeometry g{};\n"
        "  g.image_stride[3] = g.out_stride[3] = 1;\n"
        "  g.max_taps_x = cnnxfer::max_resize_taps(500, 224, true);\n"
        "  g.scale[cnnxfer::kPatchesInlineChannels - 1] = g.shift[0] = 1.0;\n"
        "  g.scale_shift_device = nullptr;\n"
        "  g.antialias = g.reverse_channels = true;\n"
        "  return static_cast<int>(cnnxfer::PatchesInputDType::kFloat16) +\n"
        "         static_cast<int>(cnnxfer::PatchesOutputDType::kBFloat16) +\n"
        "         static_cast<int>(g.max_taps_x);\n"
        "}\n"
    )
    compile_probe(probe, cuda_include)
