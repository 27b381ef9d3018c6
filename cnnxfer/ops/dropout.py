"""dropout(x, p, training): torch's dropout, with p = 0.5 on the CPU drawn from random bytes.

One random byte gives eight fair keep/drop draws, where torch's bernoulli_ draws one number per
element: 12x slower on a 2-core CPU, 14% of a training step of the adaptation head
(benches/bench_transfer.py). Other p, and GPUs (whose dropout is one fused kernel), use torch's.
The draws come from torch's generator, so torch.manual_seed makes them repeat, as for
F.dropout. The gradient is the same mask, times 1 / (1 - p).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """x with each element zeroed with probability p and the others scaled by 1 / (1 - p)
    (training), or x itself (not training, or p = 0)."""
    if not training or p == 0.0:
        return x
    if p != 0.5 or x.device.type != "cpu" or x.numel() % 8:
        return F.dropout(x, p, True)
    draws = torch.randint(0, 256, (x.numel() // 8, 1), dtype=torch.uint8)
    shifts = torch.arange(8, dtype=torch.uint8)
    keep = ((draws >> shifts) & 1).view(x.shape)
    return x * (keep.to(x.dtype) * 2.0)
