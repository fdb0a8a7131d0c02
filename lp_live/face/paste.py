"""Paste the generated face back into the full source photo, on the engine's device.

Official `paste_back`: warp the generated crop into the photo with M_c2o (bilinear, zero border),
then clip(m * P + (1 - m) * I, 0, 255) truncated to uint8, with m the crop-space mask warped the
same way. Here the sampling grid, the mask and (1 - m) * I are computed once per source, and only
over the part of the photo the crop covers; each frame is one `grid_sample` and one multiply-add.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .crop import Crop


def feather_mask(size: int, *, inner: float = 0.80, outer: float = 0.97, power: float = 4.0) -> np.ndarray:
    """A (size, size) float32 mask: 1 in a rounded square, easing to 0 towards the crop's border.

    With u, v in [-1, 1] across the crop, d = (|u|^p + |v|^p)^(1/p) is a superellipse "radius"; the
    mask is 1 for d <= inner, 0 for d >= outer, and a smoothstep in between. At the source crop's
    scale 2.3 and vy_ratio -0.125 the landmark box spans about u, v in [-0.43, 0.43] x [-0.18, 0.68]
    (the chin sits low), so the face is fully inside the flat part; the band of 0.17 half-sides
    (~8% of the crop side) hides the seam with the photo.
    """
    t = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    d = (np.abs(t)[None, :] ** power + np.abs(t)[:, None] ** power) ** (1 / power)
    x = np.clip((outer - d) / (outer - inner), 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


class PasteBack:
    """Pastes generated crops of one source photo back into it.

    Args:
        source_rgb: the full source photo, (H, W, 3) RGB uint8.
        crop: the source crop (its M_c2o and dsize).
        generated_size: side of the generated image; it covers the same region as the crop, so
            another size than crop.dsize only rescales the transform.
        device: where the per-frame work runs (the engine's device).

    `mask` is the (H, W) float32 blend mask in [0, 1], on the CPU.
    """

    def __init__(
        self, source_rgb: np.ndarray, crop: Crop, *, generated_size: int = 512, device: str | torch.device = "cpu"
    ) -> None:
        if source_rgb.ndim != 3 or source_rgb.shape[2] != 3 or source_rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) source, got {source_rgb.dtype} {source_rgb.shape}")
        self.device = torch.device(device)
        self.generated_size = generated_size
        self.source = np.ascontiguousarray(source_rgb)
        h, w = source_rgb.shape[:2]
        dsize = crop.dsize

        # The region of the photo the crop covers: its corners through M_c2o, grown by a pixel for
        # the bilinear footprint and clipped to the photo. Everything outside keeps the photo as is.
        corners = np.array(
            [[-0.5, -0.5, 1], [dsize - 0.5, -0.5, 1], [-0.5, dsize - 0.5, 1], [dsize - 0.5, dsize - 0.5, 1]]
        )
        xy = corners @ crop.M_c2o[:2].T
        x0, y0 = (max(0, int(np.floor(v)) - 1) for v in xy.min(axis=0))
        x1, y1 = min(w, int(np.ceil(xy[:, 0].max())) + 2), min(h, int(np.ceil(xy[:, 1].max())) + 2)
        self.region = (y0, y1, x0, x1)

        # For each photo pixel of the region, where it falls in the crop (M_o2c, as cv2.warpAffine
        # with M_c2o samples), in grid_sample's align_corners=False units: (2 u + 1) / dsize - 1.
        # That normalisation is the same for any generated size covering the crop, so no rescale.
        M_o2c = np.linalg.inv(crop.M_c2o)[:2]
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        u = M_o2c[0, 0] * xs + M_o2c[0, 1] * ys + M_o2c[0, 2]
        v = M_o2c[1, 0] * xs + M_o2c[1, 1] * ys + M_o2c[1, 2]
        grid = np.stack([(2 * u + 1) / dsize - 1, (2 * v + 1) / dsize - 1], axis=-1)
        self._grid = torch.from_numpy(grid.astype(np.float32))[None].to(self.device)  # (1, h, w, 2)

        mask_crop = torch.from_numpy(feather_mask(dsize))[None, None].to(self.device)
        m = self._sample(mask_crop)  # (1, 1, h, w)
        photo = torch.from_numpy(self.source[y0:y1, x0:x1]).to(self.device).permute(2, 0, 1)[None].float()
        self._m = m
        self._rest = (1 - m) * photo  # the photo's share of the blend, fixed per source

        self.mask = np.zeros((h, w), dtype=np.float32)
        self.mask[y0:y1, x0:x1] = m[0, 0].cpu().numpy()

    def _sample(self, image: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(image, self._grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _as_image(self, generated: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(1, 3, gs, gs) float32 in [0, 255] on the device, from uint8 HWC or float [0, 1] CHW input."""
        x = torch.from_numpy(np.ascontiguousarray(generated)) if isinstance(generated, np.ndarray) else generated
        gs = self.generated_size
        if x.dtype == torch.uint8:
            if tuple(x.shape) != (gs, gs, 3):
                raise ValueError(f"unexpected generated image shape: {tuple(x.shape)} != ({gs}, {gs}, 3)")
            return x.to(self.device).permute(2, 0, 1)[None].float()
        # the engine's raw output: quantise as the official parse_output does (clip, x255, truncate)
        if x.dim() == 3:
            x = x[None]
        if tuple(x.shape) != (1, 3, gs, gs) or not x.is_floating_point():
            raise ValueError(
                f"unexpected generated image: {x.dtype} {tuple(x.shape)}; expected uint8 "
                f"({gs}, {gs}, 3) or float (1, 3, {gs}, {gs}) in [0, 1]"
            )
        return (x.to(self.device, torch.float32).clamp(0, 1) * 255).floor()

    @torch.inference_mode()
    def __call__(self, generated: np.ndarray | torch.Tensor) -> np.ndarray:
        """The photo with `generated` pasted in: (gs, gs, 3) uint8 RGB -> (H, W, 3) uint8 RGB.

        Also takes the engine's float (1, 3, gs, gs) output in [0, 1], quantised as the official
        parse_output does, without a round trip through the CPU.
        """
        # round the warped pixels as cv2.warpAffine does for uint8, then blend and truncate as the official code
        pasted = self._sample(self._as_image(generated)).round_()
        blended = (self._m * pasted + self._rest).clamp_(0, 255).to(torch.uint8)  # to(uint8) truncates
        y0, y1, x0, x1 = self.region
        out = self.source.copy()
        out[y0:y1, x0:x1] = blended[0].permute(1, 2, 0).cpu().numpy()
        return out
