"""Deterministic synthetic weights: the same tensors on every machine, built from seeded normals.

Building them takes seconds of power iterations and random numbers per process, so
`checkpoint.synthetic_liveportrait` builds them once and keeps them as files in the weights cache.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch
from torch import nn

from .registry import build

# Bump when the recipe below changes what it produces: the cached files are keyed by it.
RECIPE_VERSION = 1

# Gains for dense weights by rank (Linear, Conv2d, Conv3d): chosen so that the generator's
# sigmoid does not saturate, the warping softmax is far from uniform and the MLP deltas stay
# small (about 0.04 rms), i.e. the synthetic networks behave like trained ones numerically.
_GAIN = {2: 0.7, 3: 1.0, 4: 1.0, 5: math.sqrt(2.0)}


def _normal(tag: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def synthetic_state_dict(name: str, module: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Deterministic weights for network `name`: the same on every machine and torch version
    that keeps `torch.randn`'s CPU stream, each tensor seeded by crc32("<name>/<key>")."""
    module = module if module is not None else build(name)
    template = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, ref in template.items():
        leaf, shape, tag = key.rsplit(".", 1)[-1], tuple(ref.shape), f"{name}/{key}"
        if leaf == "num_batches_tracked":
            value = torch.zeros((), dtype=torch.int64)
        elif leaf == "running_mean":
            value = 0.1 * _normal(tag, shape)
        elif leaf == "running_var":
            value = torch.exp(0.2 * _normal(tag, shape))
        elif leaf in ("weight", "weight_orig") and len(shape) >= 2:
            value = _normal(tag, shape) * (_GAIN.get(len(shape), 1.0) / math.sqrt(math.prod(shape[1:])))
        elif leaf == "weight" and len(shape) == 1:
            value = 1 + 0.1 * _normal(tag, shape)
        elif leaf == "bias":
            value = 0.02 * _normal(tag, shape)
        elif leaf in ("weight_u", "weight_v"):
            continue  # filled below from weight_orig
        else:
            value = 0.1 * _normal(tag, shape)
        out[key] = value.to(ref.dtype)
    for key in template:
        if key.endswith(".weight_u"):
            prefix = key[: -len(".weight_u")]
            u, v = _power_iteration(out[prefix + ".weight_orig"].double(), f"{name}/{key}")
            out[key], out[prefix + ".weight_v"] = u.float(), v.float()
    return {k: out[k] for k in template}


def _power_iteration(weight: torch.Tensor, tag: str, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading singular vectors (u, v) of weight.reshape(out, -1), ending with u = normalize(W v)."""
    mat = weight.reshape(weight.shape[0], -1)
    u = _normal(tag, (mat.shape[0],))
    u = u / u.norm()
    v = mat.T @ u
    for _ in range(iters):
        v = mat.T @ u
        v = v / v.norm()
        u = mat @ v
        u = u / u.norm()
    return u, v



def recipe_key(names: tuple[str, ...]) -> str:
    """A short digest of what decides the synthetic weights of `names`: the recipe's version and every
    network's keys, shapes and dtypes (a changed network gets new files, never stale ones)."""
    # torch's version too: the files must be what this torch's `randn` stream would build
    h = hashlib.sha256(f"recipe {RECIPE_VERSION} torch {torch.__version__.split('+')[0]}".encode())
    for name in names:
        with torch.device("meta"):
            template = build(name).state_dict()
        for key, ref in template.items():
            h.update(f"{name}/{key}:{tuple(ref.shape)}:{ref.dtype}\n".encode())
    return h.hexdigest()[:16]
