"""Keypoint math of LivePortrait: head pose, keypoint transform, relative motion, stitching, retargeting.

Conventions (checked against the reference fixtures):
- angles come out of M as 66 bin logits; degrees = 3 * E[bin] - 97.5;
- R = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T and keypoints are row vectors rotated as `kp @ R`;
- x = scale * (kp @ R + exp) + [tx, ty, 0]  (t_z is never used).
All functions are batched (leading B) torch code and run on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

NUM_BINS = 66


@dataclass
class Motion:
    """One image's motion, post-processed from M's raw outputs.

    pitch, yaw, roll: (B, 1) degrees; R: (B, 3, 3); t: (B, 3); exp, kp: (B, 21, 3); scale: (B, 1).
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor

    def map(self, fn) -> Motion:
        return Motion(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def row(self, i: int) -> Motion:
        """Frame `i` as a batch of one."""
        return self.map(lambda t: t[i : i + 1])

    @staticmethod
    def cat(motions: list[Motion]) -> Motion:
        """Several motions as one batch, in order."""
        return Motion(**{f.name: torch.cat([getattr(m, f.name) for m in motions]) for f in fields(Motion)})


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) logits -> (B,) degrees in [-97.5, 97.5]. Other widths are returned unchanged."""
    if logits.shape[-1] != NUM_BINS:
        return logits
    idx = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return (torch.softmax(logits, dim=-1) * idx).sum(-1) * 3 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) or (B, 1) -> (B, 3, 3) matrix R = (Rz Ry Rx)^T, to be applied as `kp @ R`."""
    a, b, c = (v.reshape(-1) / 180 * math.pi for v in (pitch, yaw, roll))
    one, zero = torch.ones_like(a), torch.zeros_like(a)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    rot_x = mat(one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos())
    rot_y = mat(b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos())
    rot_z = mat(c.cos(), -c.sin(), zero, c.sin(), c.cos(), zero, zero, zero, one)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def motion_from_raw(raw: dict[str, torch.Tensor]) -> Motion:
    """M's raw output dict -> Motion, computed in float32 (pose softmax amplifies logit error)."""
    raw = {k: v.float() for k, v in raw.items()}
    b = raw["kp"].shape[0]
    pitch, yaw, roll = (bins_to_degrees(raw[k]).reshape(b, 1) for k in ("pitch", "yaw", "roll"))
    return Motion(
        pitch=pitch,
        yaw=yaw,
        roll=roll,
        R=rotation_matrix(pitch, yaw, roll),
        t=raw["t"],
        exp=raw["exp"].reshape(b, -1, 3),
        scale=raw["scale"],
        kp=raw["kp"].reshape(b, -1, 3),
    )


def transform_keypoints(m: Motion) -> torch.Tensor:
    """Posed keypoints x = scale * (kp @ R + exp) + [tx, ty, 0]: (B, 21, 3)."""
    x = (m.kp @ m.R + m.exp) * m.scale[:, :, None]
    return torch.cat([x[..., :2] + m.t[:, None, :2], x[..., 2:]], dim=-1)


def relative_keypoints(source: Motion, driving: Motion, anchor: Motion) -> torch.Tensor:
    """Driving keypoints for the source, moved by the driving motion relative to `anchor`.

    R = R_d @ R_a^T @ R_s, exp = exp_s + (exp_d - exp_a), scale = scale_s * scale_d / scale_a,
    t = t_s + (t_d - t_a) with t_z := 0, then x = scale * (kp_s @ R + exp) + t.
    """
    r_new = driving.R @ anchor.R.transpose(1, 2) @ source.R
    exp_new = source.exp + (driving.exp - anchor.exp)
    scale_new = source.scale * (driving.scale / anchor.scale)
    t_new = source.t + (driving.t - anchor.t)
    t_new = torch.cat([t_new[:, :2], torch.zeros_like(t_new[:, 2:])], dim=1)
    return scale_new[:, :, None] * (source.kp @ r_new + exp_new) + t_new[:, None, :]


def stitch(stitching: nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """x_d corrected by the stitching MLP: 63 per-point deltas plus one (tx, ty) for all points.

    x_s is (B, 21, 3) or one source (1, 21, 3) for every driving frame of x_d (B, 21, 3).
    """
    b, k, _ = x_d.shape
    flat_s = x_s.reshape(x_s.shape[0], -1).expand(b, -1)  # (1 or B, 63) -> (B, 63)
    delta = stitching(torch.cat([flat_s, x_d.reshape(b, -1)], dim=1))  # (B, 65)
    x = x_d + delta[:, : 3 * k].reshape(b, k, 3)
    return torch.cat([x[..., :2] + delta[:, None, 3 * k :], x[..., 2:]], dim=-1)


def retarget(mlp: nn.Module, x_s: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """Eye or lip retargeting delta (B, 21, 3) from x_s and the ratio vector.

    eye: ratios = (src left eye, src right eye, driving LEFT eye) (B, 3);
    lip: ratios = (src lip, driving lip) (B, 2).
    x_s is (B, 21, 3), or (1, 21, 3) for one source and B ratio rows.
    """
    b = ratios.shape[0]
    flat_s = x_s.reshape(x_s.shape[0], -1).expand(b, -1)  # (1 or B, 63) -> (B, 63)
    return mlp(torch.cat([flat_s, ratios.to(x_s)], dim=1)).reshape(b, -1, 3)


def apply_multiplier(x_s: torch.Tensor, x_d: torch.Tensor, multiplier: float) -> torch.Tensor:
    """x_s + (x_d - x_s) * multiplier: how strongly the driving motion moves the source."""
    return x_s + (x_d - x_s) * multiplier


# ---------------------------------------------------------------------------------------------
# landmark ratios (203-point landmarks of LivePortrait's landmark model)
# ---------------------------------------------------------------------------------------------
def _distance_ratio(lmk: torch.Tensor, a: int, b: int, c: int, d: int) -> torch.Tensor:
    gap = (lmk[:, a] - lmk[:, b]).norm(dim=-1)
    width = (lmk[:, c] - lmk[:, d]).norm(dim=-1)
    return gap / (width + 1e-6)


def eye_ratios(lmk: torch.Tensor) -> torch.Tensor:
    """(B, 203, 2) landmarks -> (B, 2) [left, right] eye openness (lid gap over eye width)."""
    return torch.stack([_distance_ratio(lmk, 6, 18, 0, 12), _distance_ratio(lmk, 30, 42, 24, 36)], dim=1)


def lip_ratio(lmk: torch.Tensor) -> torch.Tensor:
    """(B, 203, 2) landmarks -> (B, 1) mouth openness (lip gap over mouth width)."""
    return _distance_ratio(lmk, 90, 102, 48, 66)[:, None]


# ---------------------------------------------------------------------------------------------
# expression-friendly motion multiplier
# ---------------------------------------------------------------------------------------------
def hull_volume(points: np.ndarray) -> float:
    """Volume of the 3-D convex hull of a point set (here the 21 keypoints)."""
    from scipy.spatial import ConvexHull

    return float(ConvexHull(np.asarray(points, np.float64)).volume)


def expression_multiplier(x_s: torch.Tensor, x_anchor: torch.Tensor) -> float:
    """sqrt(V(x_s)) / sqrt(V(x_anchor)) for batch element 0, with V the hull volume."""
    v_s = hull_volume(x_s[0].detach().double().cpu().numpy())
    v_a = hull_volume(x_anchor[0].detach().double().cpu().numpy())
    return math.sqrt(v_s) / math.sqrt(v_a)
