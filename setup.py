"""Builds cnnxfer's compiled ops: the CPU extension always, the CUDA kernels when they can be built.

    pip install --no-build-isolation -e .

Environment:
    FORCE_CUDA=1          build the CUDA kernels even if this torch has no GPU at build time
    TORCH_CUDA_ARCH_LIST  the GPU architectures to compile for ("9.0", "8.0;9.0"); by default
                          the GPUs present (one -gencode each), else sm_90 (the H200)
    CNNXFER_PORTABLE=1    do not tune the CPU code for this machine (no -march=native)
    MAX_JOBS=N            parallel compile jobs (ninja)
"""
import glob
import os
import shutil

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _relative(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda():
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "this torch has no CUDA"
    if CUDA_HOME is None or shutil.which("nvcc") is None and not os.path.exists(
        os.path.join(CUDA_HOME, "bin", "nvcc")
    ):
        return False, "nvcc not found"
    return True, f"torch CUDA {torch.version.cuda}, nvcc under {CUDA_HOME}"


def _cuda_architectures() -> str:
    """TORCH_CUDA_ARCH_LIST for the build: the user's, else the GPUs present, else 9.0.

    One -gencode per architecture that will run the code: compiling for every architecture torch
    knows multiplies the build time for nothing (the device check has minutes to build)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        present = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(present))
    return "9.0"


def _extension():
    sources = _relative("csrc/*.cpp") + _relative("csrc/cpu/*.cpp")
    cxx = ["-O3", "-fno-math-errno", "-fopenmp"]
    portable = os.environ.get("CNNXFER_PORTABLE", "0") == "1"
    if not portable:
        cxx.append("-march=native")
    macros = [("CNNXFER_TORCH_VERSION", f'"{torch.__version__}"')]
    use_cuda, why = _want_cuda()
    tuning = "portable" if portable else "tuned for this CPU (-march=native)"
    print(f"cnnxfer: CPU kernels {tuning}")
    print(f"cnnxfer: CUDA kernels {'ON' if use_cuda else 'OFF'} ({why})")
    if use_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = _cuda_architectures()
        print(f"cnnxfer: CUDA architectures {os.environ['TORCH_CUDA_ARCH_LIST']}")
        sources += _relative("csrc/cuda/*.cu") + _relative("csrc/cuda/*_binding.cpp")
        macros.append(("CNNXFER_WITH_CUDA", None))
        return CUDAExtension(
            "cnnxfer._C",
            sources,
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "cnnxfer._C",
        sources,
        define_macros=macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )


# cnnxfer's layers are its subpackages (see docs/ARCHITECTURE.md), found rather than listed so a
# new layer cannot be left out of a wheel; the Triton kernels live in the top-level kernels/ folder
# and install as cnnxfer.kernels.
PACKAGES = find_packages(include=["cnnxfer", "cnnxfer.*"])

setup(
    packages=PACKAGES + ["cnnxfer.kernels"],
    package_dir={"cnnxfer.kernels": "kernels", **{p: p.replace(".", "/") for p in PACKAGES}},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
