"""The engine's named choices, declared once and torch-free: modes and precisions.

The configuration's allowed values, the CLI's choices, the server and its page (which gets them
from the server) all read them from here; `lp_live.engine` re-exports `MODES`.
"""

from __future__ import annotations

import typing
from typing import Literal

Mode = Literal["baseline", "optimized"]  # baseline: eager, as the official code; optimized: run for speed
MODES: tuple[Mode, ...] = typing.get_args(Mode)

Precision = Literal["auto", "fp32", "bf16", "fp16"]  # of the optimized engine's W and G
PRECISIONS: tuple[Precision, ...] = typing.get_args(Precision)
