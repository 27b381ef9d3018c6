"""The CMake build of csrc/ as a library for libtorch C++ programs.

Configures and builds the project in a temporary directory against the torch of this interpreter,
runs its C++ tests (tests/cpp/relu_lrn_maxpool_example.cpp, checked against plain libtorch ops),
then installs it and builds a small program that finds it with find_package(cnnxfer).
About a minute and a half on two cores, most of it compiling torch's headers.
"""
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
CTEST = shutil.which("ctest")
JOBS = "2"  # the CPU machines have two cores

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CMAKE is None or CTEST is None,
                       reason="cmake and ctest are needed on the PATH"),
]


def _tail(text, lines=80):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def _run(cmd, timeout, cwd=None):
    """Runs cmd, printing its output (pytest shows it on failure); fails with the output's tail."""
    shown = " ".join(str(part) for part in cmd)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [str(part) for part in cmd],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{shown}` still running after {timeout} s; its output:\n{_tail(exc.output)}")
    print(f"$ {shown}  ({time.monotonic() - start:.1f} s, exit {proc.returncode})\n{proc.stdout}")
    assert proc.returncode == 0, f"`{shown}` exited with {proc.returncode}:\n{_tail(proc.stdout)}"
    return proc.stdout


def _generator():
    # Ninja schedules the two cores better than make; either works.
    return ["-G", "Ninja"] if shutil.which("ninja") else []


def _configure(source, build, prefix_path, *extra):
    _run(
        [CMAKE, "-S", source, "-B", build, *_generator(),
         f"-DCMAKE_PREFIX_PATH={prefix_path}", "-DCMAKE_BUILD_TYPE=Release", *extra],
        timeout=300,
    )


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    build = tmp_path_factory.mktemp("cnnxfer_cmake_build")
    _configure(ROOT, build, torch.utils.cmake_prefix_path, "-DCNNXFER_BUILD_TESTS=ON")
    _run([CMAKE, "--build", build, "-j", JOBS], timeout=900)
    return build


def test_ctest_passes(build_dir):
    out = _run([CTEST, "--output-on-failure"], timeout=300, cwd=build_dir)
    assert "100% tests passed" in out, _tail(out)


@pytest.mark.parametrize(
    "program",
    [
        "cnnxfer_relu_lrn_maxpool_example",  # the header API and the op by name
        "cnnxfer_relu_lrn_maxpool_by_name",  # by name only, linked with --as-needed
    ],
)
def test_example_prints_ok(build_dir, program):
    binary = build_dir / program
    assert binary.exists(), f"{program} was not built: is CNNXFER_BUILD_TESTS on?"
    out = _run([binary], timeout=300)
    assert "max abs error" in out, out
    assert out.strip().splitlines()[-1] == "OK", out


def test_installed_library_is_found_and_loaded(build_dir, tmp_path):
    prefix = tmp_path / "prefix"
    _run([CMAKE, "--install", build_dir, "--prefix", prefix], timeout=120)
    assert (prefix / "include" / "cnnxfer" / "lrn_pool.h").is_file()
    assert (prefix / "lib" / "cmake" / "cnnxfer" / "cnnxferConfig.cmake").is_file()

    # A consumer that only looks the op up by name, linked with --as-needed and torch first: the
    # installed target has to keep libcnnxfer loaded by itself.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "CMakeLists.txt").write_text(textwrap.dedent("""\
        cmake_minimum_required(VERSION 3.18)
        project(cnnxfer_consumer CXX)
        find_package(Torch REQUIRED)
        find_package(cnnxfer 0.1 REQUIRED)
        add_executable(consumer main.cpp)
        if(UNIX AND NOT APPLE)
          target_link_options(consumer PRIVATE "LINKER:--as-needed")
        endif()
        target_link_libraries(consumer PRIVATE ${TORCH_LIBRARIES} cnnxfer::cnnxfer)
        """))
    (consumer / "main.cpp").write_text(textwrap.dedent("""\
        #include <ATen/core/dispatch/Dispatcher.h>
        #include <lrn_pool.h>

        #include <cstdio>

        int main() {
          const auto op =
              c10::Dispatcher::singleton().findSchema({"cnnxfer::relu_lrn_maxpool", ""});
          std::puts(op ? "OK" : "cnnxfer::relu_lrn_maxpool is not registered");
          return op ? 0 : 1;
        }
        """))
    build = tmp_path / "consumer_build"
    _configure(consumer, build, f"{torch.utils.cmake_prefix_path};{prefix}")
    _run([CMAKE, "--build", build, "-j", JOBS], timeout=600)
    out = _run([build / "consumer"], timeout=120)
    assert out.strip().splitlines()[-1] == "OK", out
