"""`lp-live serve`: real aiortc clients against a real server (synthetic weights, baseline engine, 128 input).

One server for the module; each test checks that it still serves afterwards.
"""

from __future__ import annotations

import asyncio
import struct
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the serve extra is not installed (pip install lp-live[serve])")

import aiohttp
from aiortc import RTCPeerConnection

from lp_live.core.config import Config
from lp_live.core.modes import MODES
from lp_live.server import SERVER, background_server
from lp_live.server.sources import SourceError, decode_photo, image_size
from lp_live.tools.client import LoopTrack, read_video, stats, stream, upload

TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def serve_config(**serve) -> Config:
    cfg = Config()
    cfg.engine.weights, cfg.engine.mode, cfg.engine.input_size, cfg.engine.device = "synthetic", "baseline", 128, "cpu"
    cfg.animation.paste_back = False
    cfg.serve.port = 0
    cfg.serve.photo_side = 256  # small pasted-back frames: cheap to encode
    for key, value in serve.items():
        setattr(cfg.serve, key, value)
    return cfg


@pytest.fixture(scope="module")
def server(synthetic_models):
    cfg = serve_config(max_sessions=2, max_upload_mb=1.0, max_sdp_kb=16, idle_timeout_s=4.0)
    with background_server(cfg, models=synthetic_models, token=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def driving(assets):
    """d0.mp4 at 256x256 and 8 fps: the codecs on both ends leave the two cores to the engine."""
    frames, _ = read_video(assets / "d0.mp4", max_frames=25)
    return [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in frames], 8.0


def run(coro):
    return asyncio.run(coro)


async def _alive(url: str) -> dict:
    async with aiohttp.ClientSession() as http:
        return await stats(http, url, TOKEN)


async def _sessions_after_closing(url: str) -> int:
    """The server's session count once it reaches 0, or after 10 s."""
    for _ in range(100):
        if (await _alive(url))["sessions"] == 0:
            return 0
        await asyncio.sleep(0.1)
    return (await _alive(url))["sessions"]


async def _post(url: str, path: str, data=None, *, json=None, headers=AUTH) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, \
            http.post(f"{url}{path}", data=data, json=json, headers=headers) as r:
        return r.status, await r.json()


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_two_clients_get_animated_frames_at_the_right_sizes(server, driving):
    """Two sessions in one batch: one without paste-back (the generated 256x256), one pasted into the photo."""
    frames, fps = driving
    photo = server.app[SERVER].sources.get("default").image

    async def both():
        return await asyncio.gather(
            stream(server.url, frames, fps, token=TOKEN, duration_s=90, min_frames=2,
                   controls=[{"stitching": False, "mirror": True}, {"mode": "fastest"}]),
            stream(server.url, frames, fps, token=TOKEN, duration_s=90, min_frames=1,
                   offer_extra={"paste_back": True}))

    plain, pasted = run(both())
    assert plain.frames >= 2 and plain.sizes == {(256, 256)}
    assert pasted.frames >= 1 and pasted.sizes == {(photo.shape[1], photo.shape[0])}
    assert plain.last_image is not None and plain.last_image.std() > 1  # a picture, not a blank frame
    figures = [m["stats"] for m in plain.messages if "stats" in m]
    assert figures and figures[-1]["frames_in"] >= figures[-1]["frames_out"] >= 1
    assert figures[-1]["server_latency_ms"]["p50"] > 0
    assert figures[-1]["stitching"] is False and figures[-1]["mirror"] is True  # the controls were applied
    assert figures[-1]["modes"] == list(MODES)  # the page's `b` cycles through the server's engines
    assert any("unknown mode 'fastest'" in m.get("error", "") for m in plain.messages)
    after = run(_alive(server.url))
    assert after["steps"] >= 2 and after["frames"] >= 3 and after["modes"] == list(MODES)
    assert after["batch_max"] == 2  # the two sessions shared a step


def test_wrong_or_missing_token_is_refused(server):
    async def requests():
        async with aiohttp.ClientSession() as http:
            out = []
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                async with http.get(f"{server.url}/api/stats", headers=headers) as r:
                    out.append((r.status, (await r.json())["error"]))
            async with http.post(f"{server.url}/api/offer", json={"sdp": "x", "type": "offer"}) as r:
                out.append((r.status, (await r.json())["error"]))
            async with http.get(f"{server.url}/") as r:
                out.append((r.status, (await r.json())["error"]))
            async with http.get(f"{server.url}/?token={TOKEN}") as r:
                page = (r.status, await r.text())
            async with http.get(f"{server.url}/static/app.js") as r:
                script = r.status
            return out, page, script

    refused, page, script = run(requests())
    for status, reason in refused:
        assert status == 401 and "token" in reason and "\n" not in reason
    assert page[0] == 200 and "<video" in page[1]
    assert script == 200  # the page's code is public; the token is what guards the API
    assert run(_alive(server.url))["sessions"] == 0


def test_uploads_are_limited_decoded_and_checked(server, assets):
    url = server.url
    status, body = run(_post(url, "/api/sources", b"\xff\xd8" + bytes(1_100_000)))
    assert status == 413 and "limit" in body["error"]
    status, body = run(_post(url, "/api/sources", b"GIF89a not a photo"))
    assert status == 400 and "JPEG or PNG" in body["error"]
    status, body = run(_post(url, "/api/sources", _png_header(100_000, 100_000) + bytes(100)))
    assert status == 400 and "pixels" in body["error"]  # refused from the header, never decoded
    status, body = run(_post(url, "/api/sources", _png_header(300, 300) + bytes(100)))
    assert status == 400 and "damaged" in body["error"]
    blank = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes()
    status, body = run(_post(url, "/api/sources", blank))
    assert status == 422 and "no face" in body["error"]

    async def good():
        async with aiohttp.ClientSession() as http:
            return await upload(http, url, (assets / "s6.jpg").read_bytes(), TOKEN)

    source_id = run(good())
    assert server.app[SERVER].sources.get(source_id).image.shape[2] == 3
    offer = {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer", "source": "nope"}
    status, body = run(_post(url, "/api/offer", json=offer))
    assert status == 404 and "POST /api/sources" in body["error"]
    assert run(_alive(url))["sessions"] == 0


def test_garbage_offers_are_refused_with_one_line(server):
    url = server.url
    for payload, kwargs, code in ((b"{not json", {}, 400),
                                  (None, {"json": {"sdp": 42, "type": "offer"}}, 400),
                                  (None, {"json": {"sdp": "hello\nworld", "type": "offer"}}, 400),
                                  (None, {"json": {"sdp": "v=0\r\n" * 10_000, "type": "offer"}}, 413)):
        status, body = run(_post(url, "/api/offer", payload, **kwargs))
        assert status == code and body["error"] and "\n" not in body["error"], (status, body)
    assert run(_alive(url))["sessions"] == 0


def test_server_full_then_idle_sessions_are_closed(server, driving):
    """max_sessions=2: a third offer gets 503; offers never connected are closed after the idle timeout."""
    frames, fps = driving

    async def offers(n: int) -> list[tuple[int, dict]]:
        out, pcs = [], []
        for _ in range(n):
            pc = RTCPeerConnection()
            pcs.append(pc)
            pc.addTransceiver(LoopTrack(frames[:1], fps), direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            out.append(await _post(url, "/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}))
        for pc in pcs:
            await pc.close()
        return out

    url = server.url
    answers = run(offers(3))
    assert [status for status, _ in answers] == [200, 200, 503]
    assert answers[0][1]["type"] == "answer" and "server full" in answers[2][1]["error"]

    assert run(_sessions_after_closing(url)) == 0


def test_https_needs_a_matching_certificate_and_key(tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from lp_live.core.errors import UserError
    from lp_live.server.app import access_token, ssl_context

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lp-live-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    assert ssl_context(str(cert_pem), str(key_pem)) is not None
    assert ssl_context(None, None) is None
    with pytest.raises(UserError, match="both --cert and --key"):
        ssl_context(str(cert_pem), None)
    with pytest.raises(UserError, match="cannot use"):
        ssl_context(str(key_pem), str(key_pem))
    cfg = serve_config(host="0.0.0.0")
    token, generated = access_token(cfg)
    assert generated and len(token) >= 24
    assert access_token(serve_config())[0] is None  # loopback: no token needed
    assert access_token(serve_config(host="0.0.0.0", token="mine")) == ("mine", False)


def test_a_session_keeps_the_newest_frame_counts_drops_and_frees_its_state_on_close():
    import av

    from lp_live.face import HaarFaceDetector
    from lp_live.server.sessions import Session
    from lp_live.session import DEFAULT_SOURCE, DrivingStream, load_photo, read_image

    source = load_photo(read_image(DEFAULT_SOURCE), HaarFaceDetector(), input_size=128, max_side=256, device="cpu",
                        name="default")

    async def scenario():
        wake = asyncio.Event()
        stream = DrivingStream(source, HaarFaceDetector(), input_size=128, paste_back=False)
        session = Session("s", stream, "baseline")
        frames = [av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24") for i in range(3)]
        for frame in frames:
            session.offer_frame(frame, wake)
        taken, again = session.take(), session.take()
        for i in range(2):
            session.deliver(np.full((8, 8, 3), i, np.uint8), taken.t_received, 5.0)
        out, _ = session.output.get_nowait()
        problems = [session.control({"mode": "fast"}, ("baseline", "optimized")),
                    session.control({"mirror": "yes"}, ("baseline",)), session.control({"volume": 3}, ("baseline",))]
        assert session.control({"mode": "optimized", "stitching": False}, ("baseline", "optimized")) is None
        assert session.mode == "optimized" and stream.options.stitching is False
        assert session.control({"mirror": True, "mode": "fast"}, ("baseline", "optimized")) is not None
        assert stream.mirror is False  # nothing of a message applies when one value is wrong
        session.close()
        session.offer_frame(frames[0], wake)
        return session, taken, again, out, problems, wake.is_set()

    session, taken, again, out, problems, woken = asyncio.run(scenario())
    assert taken.frame.to_ndarray(format="rgb24")[0, 0, 0] == 2 and again is None  # the newest won
    assert session.dropped_in == 2 and session.frames_in == 3
    assert out[0, 0, 0] == 1 and session.dropped_out == 1  # the encoder gets the newest animated frame
    assert all(p and "\n" not in p for p in problems)
    assert session.stream is None and session.pending is None and session.frames_in == 3 and woken


def test_image_size_reads_headers(assets):
    assert image_size((assets / "s6.jpg").read_bytes()) == (725, 725)
    assert image_size(_png_header(640, 480)) == (640, 480)
    with pytest.raises(SourceError, match="at least"):
        decode_photo(cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes(), max_pixels=10**6)



def test_the_page_in_headless_chromium_shows_animated_frames(server, assets, tmp_path):
    """The real page with a fake camera from d0.mp4: it starts, and its own figures count animated frames."""
    from lp_live.tools.browser import Browser, find_chromium, run_page, write_y4m

    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    camera = write_y4m(assets / "d0.mp4", tmp_path / "camera.y4m", max_frames=25)
    shot = tmp_path / "serve-page.png"
    with Browser(camera) as browser:
        stats = run(run_page(browser, f"{server.url}/?token={TOKEN}&autostart=1", min_frames=2, timeout_s=240,
                             screenshot=shot))
    assert stats.get("error") is None, stats.get("error")
    assert max(stats["framesShown"], stats["framesDecoded"]) >= 2, stats
    assert stats["server"]["frames_out"] >= 1 and stats["inferMs"] > 0  # (the server's figures lag by <= 0.5 s)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")  # kept by pytest under its tmp dir (the test artefact)


@pytest.mark.slow
def test_serve_bench_writes_the_load_figure(tmp_path, assets):
    import json

    from lp_live.cli import cmd_serve_bench  # not main(): no CPU threading set up inside pytest

    out = tmp_path / "serve.json"
    assert cmd_serve_bench(["--clients", "1", "2", "--seconds", "8", "--mode", "baseline", "--input-size", "128",
                 "--device", "cpu", "--side", "256", "--fps", "8", "--no-paste-back", "--driving",
                 str(assets / "d0.mp4"), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["clients"] for r in results["runs"]] == [1, 2]
    for r in results["runs"]:
        assert len(r["per_session"]) == r["clients"] and r["steps"] >= 1
    assert results["meta"]["git_commit"] and results["targets"]["n4_throughput_at_least_n1"] is None


def test_a_garbage_offer_is_refused_400_even_by_a_full_server_in_plain_words(server, driving):
    frames, fps = driving

    async def full_then_garbage() -> list[tuple[int, dict]]:
        await _sessions_after_closing(url)  # an earlier test's streams close asynchronously
        pcs, out = [], []
        for _ in range(2):  # max_sessions=2: full
            pc = RTCPeerConnection()
            pcs.append(pc)
            pc.addTransceiver(LoopTrack(frames[:1], fps), direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            out.append(await _post(url, "/api/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}))
        for sdp in ("garbage", "v=0\r\nthis is not sdp\r\n", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n"):
            out.append(await _post(url, "/api/offer", json={"sdp": sdp, "type": "offer"}))
        for pc in pcs:
            await pc.close()
        return out

    url = server.url
    answers = run(full_then_garbage())
    assert [status for status, _ in answers] == [200, 200, 400, 400, 400]
    for _, body in answers[2:]:
        error = body["error"]
        assert error.startswith("not a usable WebRTC offer: ") and "\n" not in error
        assert "Error" not in error and "Traceback" not in error and "'" not in error  # no Python text

    assert run(_sessions_after_closing(url)) == 0  # the two never connected: closed after the idle timeout
