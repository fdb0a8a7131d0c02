"""Host <-> device copies of the optimized engine through pinned buffers, never blocking the stream.

Uploads go through one pinned staging buffer per shape (reused once its previous copy has
finished); downloads queue a non-blocking copy into a pinned buffer of their own and return a
`PendingImage` whose `result()` is the frame's only host wait.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import PendingImage


class PinnedTransfers:
    """Pinned staging buffers for uploads and a free list of download buffers, by shape."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[tuple, tuple[torch.Tensor, torch.cuda.Event]] = {}
        self._free: dict[tuple[int, ...], list[torch.Tensor]] = {}  # download buffers, by shape

    def upload(self, images: np.ndarray) -> torch.Tensor:
        """A contiguous uint8 host array on the device (a non-blocking copy on CUDA)."""
        host = torch.from_numpy(images)
        if self.device.type != "cuda":
            return host.to(self.device)
        key = tuple(host.shape)
        if key not in self._staging:
            self._staging[key] = (torch.empty(key, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
        pinned, done = self._staging[key]
        done.synchronize()  # the previous copy out of this buffer has finished (normally long ago)
        pinned.copy_(host)
        x = pinned.to(self.device, non_blocking=True)
        done.record()
        return x

    def download(self, image: torch.Tensor) -> PendingImage:
        """Queue the non-blocking copy of a uint8 image ((H, W, 3) or (B, H, W, 3)) into a pinned
        buffer of its own: a buffer goes back to the free list only when `result()` has read it."""
        key = tuple(image.shape)
        free = self._free.setdefault(key, [])
        pinned = free.pop() if free else torch.empty(key, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(image, non_blocking=True)
        done = torch.cuda.Event()
        done.record()  # on the current stream, after the copy
        return _PinnedImage(pinned, done, free)


class _PinnedImage(PendingImage):
    """A frame on its way into a pinned host buffer; the buffer returns to `free` once read."""

    def __init__(self, pinned: torch.Tensor, done: torch.cuda.Event, free: list[torch.Tensor]) -> None:
        super().__init__(np.empty(0, np.uint8))
        self._pinned, self._done, self._free = pinned, done, free
        self._read = False

    def ready(self) -> bool:
        return self._read or self._done.query()

    def result(self) -> np.ndarray:
        if not self._read:
            self._done.synchronize()  # the frame's only host wait
            self._image = self._pinned.numpy().copy()
            self._free.append(self._pinned)
            self._read = True
        return self._image
