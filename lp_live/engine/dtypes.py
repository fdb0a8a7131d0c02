"""The precision names (`core.modes.PRECISIONS`, less "auto") and their torch dtypes: the one table."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
