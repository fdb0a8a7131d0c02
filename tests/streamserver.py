"""A live MPEG-TS stream over TCP for the camera-loss tests: `python streamserver.py PORT VIDEO`.

Listens on 127.0.0.1:PORT, waits for one client (the reader under test), then sends VIDEO's
frames (scaled to 128x128, looped) at 25 fps as H.264 in MPEG-TS until it is killed or the
client goes away. Killing this process is a stream that drops; starting it again, one that
comes back.
"""

from __future__ import annotations

import socket
import sys
import time

import av
import numpy as np


def frames(video: str, count: int = 25) -> list[np.ndarray]:
    with av.open(video) as c:
        out = []
        for frame in c.decode(video=0):
            out.append(frame.reformat(width=128, height=128, format="yuv420p").to_ndarray(format="rgb24"))
            if len(out) == count:
                return out
    return out


def serve(port: int, video: str, fps: int = 25) -> None:
    images = frames(video)
    server = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    conn, _ = server.accept()
    with conn, conn.makefile("wb") as sink, av.open(sink, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        stream.codec_context.gop_size = 5  # a client that joins decodes from a keyframe soon
        t0 = time.perf_counter()
        for i in range(10**9):
            frame = av.VideoFrame.from_ndarray(images[i % len(images)], format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
            delay = t0 + (i + 1) / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
