"""Source photos sent to the server: sized from their header, decoded, checked, kept by id.

An upload is never written to disk. Its width and height are read from the PNG or JPEG header
before anything is decoded, so a small file that would decode to a huge image is refused
cheaply; then OpenCV decodes it, and `session.load_photo` (the desktop app's own) finds the face
and crops it. The store keeps at most `max_sources` photos under random ids (`SourcePhoto.name`)
and forgets the oldest one no stream uses.
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections import OrderedDict

import cv2
import numpy as np

from ..session import MIN_SOURCE_SIDE, SourcePhoto

DEFAULT_ID = "default"  # the packaged portrait, always there


class SourceError(ValueError):
    """An upload that cannot be used; the message is the one-line answer to the client."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, or SourceError."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + length
        raise SourceError("the JPEG has no readable frame header; send a complete JPEG or PNG photo")
    raise SourceError("not a JPEG or PNG image; send the photo's bytes as a JPEG or PNG file")


def decode_photo(data: bytes, *, max_pixels: int) -> np.ndarray:
    """RGB uint8 from the bytes of a JPEG or PNG upload, checked before and after decoding."""
    w, h = image_size(data)
    if w * h > max_pixels:
        raise SourceError(f"the photo is {w}x{h} = {w * h} pixels; the limit is {max_pixels}: send a smaller one")
    if min(w, h) < MIN_SOURCE_SIDE:
        raise SourceError(f"the photo is {w}x{h}; it needs at least {MIN_SOURCE_SIDE} pixels on each side")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[1] != w or image.shape[0] != h:
        raise SourceError("the image data is damaged or truncated; send a complete JPEG or PNG photo")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class SourceStore:
    """Sources by id; at most `limit` uploads (plus the default), the oldest unused forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._sources: OrderedDict[str, SourcePhoto] = OrderedDict()

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(12)

    def add(self, source: SourcePhoto, in_use: set[str] = frozenset()) -> None:
        with self._lock:
            self._sources[source.name] = source
            uploads = [k for k in self._sources if k != DEFAULT_ID]
            for key in uploads[: max(0, len(uploads) - self.limit)]:
                if key not in in_use:
                    del self._sources[key]

    def get(self, source_id: str) -> SourcePhoto | None:
        with self._lock:
            return self._sources.get(source_id)

    def __len__(self) -> int:
        return len(self._sources)
