"""pytest-benchmark set-up for cnnxfer: `pytest benches/ --benchmark`.

Every case times cnnxfer and its anchors in the same run (plain PyTorch eager, torch.compile of
the same plain PyTorch, and a same-size copy as the memory floor); the summary prints ratios.
Without --benchmark the files here are collected but skipped, so `pytest` never runs them by
accident.
"""
from __future__ import annotations

import time
from collections import defaultdict

import pytest
import torch

from cnnxfer.ops.precision import cpu_model_and_flags

# case -> provider -> median seconds; case -> bytes moved by the op (read + written)
_TIMES: dict[str, dict[str, float]] = defaultdict(dict)
_BYTES: dict[str, tuple[int, int]] = {}
_NOTES: list[str] = []  # accuracy figures and other lines printed under the table


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run cnnxfer's benchmarks (benches/) and print the ratio table")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run with: pytest benches/ --benchmark")
    for item in items:
        if "benches" in item.path.parts:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _settle_torch():
    torch._dynamo.config.cache_size_limit = 64  # one compiled reference per case
    yield


@pytest.fixture
def record():
    """record(case, provider, benchmark, fn, *, bytes_in=None, bytes_out=None): times fn with
    pytest-benchmark and keeps its median for the ratio table."""

    def run(case: str, provider: str, benchmark, fn, *, bytes_in=None, bytes_out=None):
        fn()  # warm-up outside the timing: compilation, first-touch allocations
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        # about a second per provider, at least 5 rounds: medians of a handful are noisy here
        rounds = int(min(50, max(5, 1.0 / max(once, 1e-6))))
        benchmark.group = case
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
        _TIMES[case][provider] = benchmark.stats.stats.median
        if bytes_in is not None:
            _BYTES[case] = (bytes_in, bytes_out)

    return run


@pytest.fixture
def note():
    """note(line): a line printed under the ratio table (accuracy measured beside the times)."""
    return _NOTES.append


# Providers that are not anchors to beat but the floor: "copy" is a same-size copy of the input
# (scaled to the op's bytes read + written), "floor" already moves exactly the op's output bytes.
_FLOORS = ("copy", "floor")


def _floor_seconds(case: str, times: dict[str, float]) -> float | None:
    if "floor" in times:
        return times["floor"]
    if "copy" in times and case in _BYTES:
        bytes_in, bytes_out = _BYTES[case]
        return times["copy"] * (bytes_in + bytes_out) / (2 * bytes_in)
    return None


def machine() -> str:
    """The CPU model, its AVX-512 / AMX flags (they decide the bf16 paths), threads and torch."""
    model, flags = cpu_model_and_flags()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    return (f"{model}; {' '.join(wanted) or 'no AVX flags listed'}; "
            f"{torch.get_num_threads()} threads; torch {torch.__version__}")


def _format_table() -> list[str]:
    lines = ["", f"machine: {machine()}",
             "cnnxfer ratios (median times, same run; anchor time / cnnxfer time, > 1 means "
             "cnnxfer is faster; floor frac = floor time / cnnxfer time):",
             f"{'case':52s} {'cnnxfer ms':>10s} {'floor frac':>10s}  ratios"]
    for case, times in _TIMES.items():
        ours = times.get("cnnxfer")
        if ours is None:
            continue
        floor_s = _floor_seconds(case, times)
        floor = f"{floor_s / ours:10.2f}" if floor_s else f"{'-':>10s}"
        ratios = ", ".join(f"{provider} {seconds / ours:.2f}x" for provider, seconds in
                           times.items() if provider != "cnnxfer" and provider not in _FLOORS)
        lines.append(f"{case:52s} {ours * 1e3:10.2f} {floor}  {ratios}")
    # bf16 against cnnxfer's own fp32 on the same shape and layout
    pairs = []
    for case, times in _TIMES.items():
        if "bf16" in case and "cnnxfer" in times:
            twin = _TIMES.get(case.replace("bf16", "fp32"), {}).get("cnnxfer")
            if twin:
                pairs.append(f"  {case.replace('bf16', '*')}: bf16 {twin / times['cnnxfer']:.2f}x "
                             f"faster than cnnxfer fp32")
    if pairs:
        lines += ["", "bf16 vs cnnxfer fp32:"] + pairs
    if _NOTES:
        lines += [""] + _NOTES
    return lines


def pytest_terminal_summary(terminalreporter):
    if _TIMES:
        for line in _format_table():
            terminalreporter.write_line(line)
