"""Source photos sent to the server: sized from their header, decoded, checked, cropped once.

An upload is never written to disk. Its width and height are read from the PNG or JPEG header
before anything is decoded, so a small file that would decode to a huge image is refused
cheaply; then OpenCV decodes it and the face detector must find a face. The store keeps at most
`max_sources` photos under random ids and forgets the oldest one no stream uses.
"""

from __future__ import annotations

import functools
import secrets
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..face import SOURCE_CROP, Crop, FaceDetector, PasteBack, crop_face
from ..session.animator import MIN_SOURCE_SIDE, fit_source

DEFAULT_ID = "default"  # the packaged portrait, always there


class SourceError(ValueError):
    """An upload that cannot be used; the message is the one-line answer to the client."""


class NoFaceError(SourceError):
    """A photo in which the face detector finds no face."""


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


@dataclass
class Source:
    """One photo ready to animate: fitted, its face crop (the engine input) and its paste-back."""

    id: str
    photo: np.ndarray  # RGB uint8, longer side at most photo_side, even sides
    crop: Crop
    generated_size: int
    device: torch.device

    @property
    def input(self) -> np.ndarray:
        return self.crop.input

    @functools.cached_property
    def paster(self) -> PasteBack:
        """Built when a stream first pastes back: its tensors are tens of MB for a large photo."""
        return PasteBack(self.photo, self.crop, generated_size=self.generated_size, device=self.device)


def make_source(source_id: str, image: np.ndarray, detector: FaceDetector, *, input_size: int, photo_side: int,
                device: torch.device) -> Source:
    """A Source from an RGB photo, or SourceError when no face is found."""
    photo = fit_source(image, max_side=photo_side)
    face = detector.detect(photo)
    if face is None:
        raise NoFaceError("no face found in the photo; send a photo with one clear, frontal face")
    crop = crop_face(photo, face, SOURCE_CROP, input_size=input_size)
    return Source(source_id, photo, crop, 2 * input_size, torch.device(device))


class SourceStore:
    """Sources by id; at most `limit` uploads (plus the default), the oldest unused forgotten first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._sources: OrderedDict[str, Source] = OrderedDict()

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(12)

    def add(self, source: Source, in_use: set[str] = frozenset()) -> None:
        with self._lock:
            self._sources[source.id] = source
            uploads = [k for k in self._sources if k != DEFAULT_ID]
            for key in uploads[: max(0, len(uploads) - self.limit)]:
                if key not in in_use:
                    del self._sources[key]

    def get(self, source_id: str) -> Source | None:
        with self._lock:
            return self._sources.get(source_id)

    def __len__(self) -> int:
        return len(self._sources)
