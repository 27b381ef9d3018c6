"""One comparison helper for kernels against the float64 reference, with a tolerance per dtype."""
from __future__ import annotations

import torch

# (rtol, atol) for a kernel output in this dtype against the float64 reference evaluated on the
# same (already rounded) input. bf16/fp16 allow a couple of output roundings.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (2e-3, 1e-4),
    torch.bfloat16: (1.6e-2, 1e-3),
}


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """actual (kernel dtype) against expected (float64); NaN must match NaN, inf must match inf.
    On failure, says where the first mismatch is."""
    rtol, atol = TOLERANCES[actual.dtype]
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    nan_a, nan_e = a.isnan(), e.isnan()
    if not torch.equal(nan_a, nan_e):
        where = (nan_a != nan_e).nonzero()[0].tolist()
        raise AssertionError(f"NaN mismatch at {where}: got {a[tuple(where)]}, "
                             f"expected {e[tuple(where)]}")
    a, e = a.masked_fill(nan_a, 0), e.masked_fill(nan_e, 0)
    bad = ~torch.isclose(a, e, rtol=rtol, atol=atol)
    if bad.any():
        where = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{int(bad.sum())} of {a.numel()} values differ beyond rtol={rtol}, atol={atol}; "
            f"first at {where}: got {a[tuple(where)].item()}, expected {e[tuple(where)].item()}; "
            f"max abs error {(a - e).abs().max().item():.3g}")
