"""`lp-live serve`: the page, the HTTP API, access control and limits.

    GET  /              the page (with a token: /?token=TOKEN)
    GET  /static/NAME   its script and style (public, no secrets in them)
    POST /api/sources   body: the bytes of a JPEG or PNG photo   -> {"id", "width", "height"}
    POST /api/offer     {"sdp", "type": "offer", "source": id}   -> {"sdp", "type": "answer", "session"}
    GET  /api/stats     the measured figures, as JSON

With a token every /api call carries `Authorization: Bearer TOKEN` (compared in constant time).
Bad requests get a 4xx and `{"error": "one line"}`; nothing a client sends is written to disk.
The offer's client sends one video track and receives one; a data channel it opens carries
control messages (JSON: mode, reanchor, paste_back, stitching, mirror) one way and the session's
figures (twice a second) the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from ..core.config import Config
from ..core.errors import UserError
from ..core.modes import MODES
from ..models import LivePortraitModels
from ..session import (
    DEFAULT_SOURCE,
    DrivingStream,
    EnginePool,
    NoFaceError,
    SourcePhoto,
    create_driving_detector,
    create_smoother,
    engine_factory,
    load_models,
    load_photo,
    read_image,
    resolve_device,
    unmet_requests,
    warm_frame,
    warm_up,
)
from .checks import is_loopback, sdp_problem, token_matches
from .scheduler import Scheduler
from .sessions import AnimatedTrack, Session
from .sources import DEFAULT_ID, SourceError, SourceStore, decode_photo

log = logging.getLogger(__name__)

PAGE = resources.files("lp_live") / "server" / "page"
STATS_EVERY_S = 0.5  # figures pushed to the page over the data channel
IDLE_CHECK_S = 1.0
SERVER = web.AppKey("server", "Server")


class RequestError(Exception):
    """A request that gets a 4xx/5xx answer with a one-line reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


async def read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes."""
    too_large = RequestError(413, f"{what} is larger than the limit of {limit} bytes; send a smaller one")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


class Server:
    """The server's state: configuration, sources, the scheduler, the peer connections."""

    def __init__(self, config: Config, *, models: LivePortraitModels | None = None, token: str | None = None) -> None:
        self.config = config
        self.token = token
        self.device = resolve_device(config.engine.device)
        self._models = models
        self.models: LivePortraitModels | None = None
        self.sources = SourceStore(config.serve.max_sources)
        self.scheduler: Scheduler | None = None
        self.peers: dict[str, RTCPeerConnection] = {}
        self.warnings: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self.started = time.time()

    # -- life cycle -------------------------------------------------------------------------
    async def start(self, app: web.Application | None = None) -> None:
        cfg = self.config
        self.models = self._models or await asyncio.to_thread(load_models, cfg, self.device)
        self.scheduler = Scheduler(EnginePool(engine_factory(cfg, self.models, self.device), MODES))
        self.warnings = unmet_requests(cfg, self.device, self.detector())
        for line in self.warnings:
            log.warning("%s", line)
        default = await asyncio.to_thread(self._make_source, DEFAULT_ID, read_image(DEFAULT_SOURCE))
        self.sources.add(default)
        # the first engine, built and run once now (graphs, compilation) instead of on someone's first frame;
        # mode optimized: the baseline engine answers while the optimized one compiles beside it (the step
        # thread switches the streams to it once it is ready), unless --wait-for-optimized
        background = cfg.engine.mode == "optimized" and not cfg.engine.wait_for_optimized
        first = "baseline" if background else cfg.engine.mode
        t0 = time.perf_counter()
        await self.scheduler.call(warm_up, self.scheduler.pool, first, default)
        log.info("%s engine ready in %.1f s", first, time.perf_counter() - t0)
        if background:
            self.scheduler.pool.build_in_background("optimized", warm_frame(default, "optimized"), device=self.device)
        self.scheduler.start()
        self._spawn(self._reap_idle())

    async def stop(self, app: web.Application | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(pc.close() for pc in list(self.peers.values())), return_exceptions=True)
        self.peers.clear()
        if self.scheduler is not None:
            await self.scheduler.stop()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def detector(self):
        """A new face detector and tracker (one per stream: tracking keeps state)."""
        return create_driving_detector(self.config, self.models)

    def _photos_in_use(self) -> set[str]:
        return {s.stream.photo.name for s in self.scheduler.sessions.values() if s.stream is not None}

    def _make_source(self, source_id: str, image) -> SourcePhoto:
        cfg = self.config
        return load_photo(image, self.detector(), input_size=cfg.engine.input_size, device=self.device,
                          max_side=cfg.serve.photo_side, name=source_id)

    async def _reap_idle(self) -> None:
        limit = self.config.serve.idle_timeout_s
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            now = time.perf_counter()
            for session in list(self.scheduler.sessions.values()):
                if now - session.last_seen > limit:
                    log.info("session %s idle for %.0f s: closing it", session.id, now - session.last_seen)
                    await self.close_session(session.id)

    async def close_session(self, session_id: str) -> None:
        self.scheduler.remove(session_id)
        pc = self.peers.pop(session_id, None)
        if pc is not None:
            await pc.close()

    # -- handlers ---------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=(PAGE / "index.html").read_text(encoding="utf-8"), content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    async def upload_source(self, request: web.Request) -> web.Response:
        serve = self.config.serve
        data = await read_limited(request, int(serve.max_upload_mb * 1e6), "the photo")
        if not data:
            raise RequestError(400, "empty body; send the photo's bytes (JPEG or PNG) as the request body")

        def build():
            image = decode_photo(data, max_pixels=serve.max_pixels)
            return self._make_source(self.sources.new_id(), image)

        try:
            source = await asyncio.to_thread(build)
        except SourceError as e:
            raise RequestError(400, str(e)) from None
        except NoFaceError as e:
            raise RequestError(422, str(e)) from None
        self.sources.add(source, in_use=self._photos_in_use())
        h, w = source.image.shape[:2]
        return web.json_response({"id": source.name, "width": w, "height": h})

    async def offer(self, request: web.Request) -> web.Response:
        serve, scheduler = self.config.serve, self.scheduler
        body = await read_limited(request, serve.max_sdp_kb * 1024, "the offer")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, f"the offer is not JSON ({e}); send {{\"sdp\", \"type\": \"offer\", "
                                    "\"source\"}") from None
        if not isinstance(data, dict) or data.get("type") != "offer" or not isinstance(data.get("sdp"), str):
            raise RequestError(400, "expected a JSON object {\"sdp\": ..., \"type\": \"offer\", \"source\": id}")
        problem = sdp_problem(data["sdp"])
        if problem:  # before anything else, a full server included: a bad offer is the client's to fix
            raise RequestError(400, f"not a usable WebRTC offer: {problem}")
        source = self.sources.get(str(data.get("source", DEFAULT_ID)))
        if source is None:
            raise RequestError(404, f"unknown source {data.get('source')!r}; upload the photo with "
                                    "POST /api/sources and use the id it returns")
        if len(scheduler.sessions) >= serve.max_sessions:
            raise RequestError(503, f"server full: {serve.max_sessions} of {serve.max_sessions} streams in use; "
                                    "try again later", {"Retry-After": "30"})
        cfg = self.config
        stream = DrivingStream(source, self.detector(), input_size=cfg.engine.input_size,
                               options=cfg.animation.options(), paste_back=cfg.animation.paste_back,
                               mirror=cfg.stream.mirror, crop_driving=cfg.face.crop_driving,
                               smoother=create_smoother(cfg))
        session = Session(secrets.token_urlsafe(9), stream, cfg.engine.mode)
        problem = session.control({k: data[k] for k in ("mode", "paste_back", "mirror", "stitching") if k in data},
                                  MODES)
        if problem:
            raise RequestError(400, problem)
        scheduler.add(session)  # holds its place among max_sessions while the offer is answered
        pc = RTCPeerConnection()
        self.peers[session.id] = pc
        try:
            return await self._answer(pc, session, data["sdp"])
        except RequestError:
            await self.close_session(session.id)
            raise
        except Exception as e:  # aiortc's own text is no help to the client: logged, not sent
            await self.close_session(session.id)
            log.info("offer refused: %s: %s", type(e).__name__, " ".join(str(e).split()))
            raise RequestError(400, "not a usable WebRTC offer: its SDP could not be read; send the offer "
                                    "your browser's createOffer() made, unchanged") from None

    async def _answer(self, pc: RTCPeerConnection, session: Session, sdp: str) -> web.Response:
        wake = self.scheduler.wake

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video":
                self._spawn(session.consume(track, wake))

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            self._spawn(self._push_stats(channel, session))

            @channel.on("message")
            def on_message(message) -> None:
                try:
                    problem = session.control(json.loads(message), MODES)
                except (TypeError, ValueError, AttributeError):
                    problem = "a control message is a JSON object, e.g. {\"mode\": \"baseline\"}"
                channel.send(json.dumps({"error": problem} if problem else {"ok": True}))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close_session(session.id)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))  # fires "track"
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            raise RequestError(400, "the offer has no video track; send the camera as one video track")
        pc.addTrack(AnimatedTrack(session))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id})

    async def _push_stats(self, channel, session: Session) -> None:
        while not session.closed:
            if channel.readyState == "open":
                figures = session.stats()
                sched = self.scheduler.stats()
                figures.update(speed_ratio=sched["speed_ratio"], step_ms=sched["step_ms"], sessions=sched["sessions"],
                               background=sched["background"], engine=self.scheduler.running_mode(session.mode),
                               device=str(self.device), weights=self.models.kind, modes=list(MODES),
                               t_server=time.time())
                channel.send(json.dumps({"stats": figures}))
            elif channel.readyState == "closed":
                return
            await asyncio.sleep(STATS_EVERY_S)

    async def stats(self, request: web.Request) -> web.Response:
        figures = self.scheduler.stats()
        figures.update(device=str(self.device), weights=self.models.kind, modes=list(MODES),
                       engines_built=list(self.scheduler.pool.built()),
                       input_size=self.config.engine.input_size, max_sessions=self.config.serve.max_sessions,
                       uptime_s=time.time() - self.started, warnings=self.warnings)
        return web.json_response(figures)


def _middleware(server: Server) -> Callable:
    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        try:
            if server.token is not None and not request.path.startswith("/static/"):
                if request.path.startswith("/api/"):
                    header = request.headers.get("Authorization", "")
                    given = header[7:] if header.startswith("Bearer ") else ""
                else:
                    given = request.query.get("token", "")
                if not token_matches(given, server.token):
                    where = "the header Authorization: Bearer TOKEN" if request.path.startswith("/api/") \
                        else "the page address as /?token=TOKEN"
                    raise RequestError(401, f"missing or wrong access token; send it in {where}")
            return await handler(request)
        except RequestError as e:
            return web.json_response({"error": e.reason}, status=e.status, headers=e.headers)

    return guard


def create_app(config: Config, *, models: LivePortraitModels | None = None, token: str | None = None
               ) -> web.Application:
    """The aiohttp application; the server starts (engines, default source) with the app."""
    server = Server(config, models=models, token=token)
    # the body limits are checked by the handlers with their own messages; this is a backstop
    max_body = int(config.serve.max_upload_mb * 1e6) + config.serve.max_sdp_kb * 1024 + 1024
    app = web.Application(middlewares=[_middleware(server)], client_max_size=max_body)
    app[SERVER] = server
    app.router.add_get("/", server.page)
    app.router.add_static("/static/", Path(str(PAGE)), show_index=False, follow_symlinks=False)
    app.router.add_post("/api/sources", server.upload_source)
    app.router.add_post("/api/offer", server.offer)
    app.router.add_get("/api/stats", server.stats)
    app.on_startup.append(server.start)
    app.on_shutdown.append(server.stop)
    return app


def ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UserError("HTTPS needs both --cert and --key (PEM files)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"cannot use --cert {cert} / --key {key}: {e}; pass a PEM certificate and its key") from None
    return context


def access_token(config: Config) -> tuple[str | None, bool]:
    """(token, generated): the configured token, a new one where the host is not loopback, else None."""
    serve = config.serve
    if serve.token:
        return serve.token, False
    if is_loopback(serve.host):
        return None, False
    return secrets.token_urlsafe(24), True


@dataclass
class Running:
    url: str
    token: str | None
    app: web.Application


@contextlib.contextmanager
def background_server(config: Config, *, models: LivePortraitModels | None = None, token: str | None = None):
    """Run the server on its own thread and event loop (tests, serve-bench); yields a `Running`."""
    loop = asyncio.new_event_loop()
    app = create_app(config, models=models, token=token)
    runner = web.AppRunner(app)
    ready = threading.Event()
    failure: list[BaseException] = []
    sites: list[web.TCPSite] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, config.serve.host, config.serve.port)
            loop.run_until_complete(site.start())
            sites.append(site)
        except BaseException as e:
            failure.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="lp-live-serve", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        raise failure[0]
    port = sites[0]._server.sockets[0].getsockname()[1]
    try:
        yield Running(f"http://{config.serve.host}:{port}", token, app)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


async def serve_forever(config: Config, *, announce: Callable[[str], None] = print) -> None:
    """`lp-live serve`: run until interrupted."""
    serve = config.serve
    context = ssl_context(serve.cert, serve.key)
    token, generated = access_token(config)
    app = create_app(config, token=token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, serve.host, serve.port, ssl_context=context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"cannot listen on {serve.host}:{serve.port}: {e.strerror or e}; choose another --port "
                        "or --host") from None
    port = site._server.sockets[0].getsockname()[1]
    host = f"[{serve.host}]" if ":" in serve.host else serve.host
    url = f"{'https' if context else 'http'}://{host}:{port}/" + (f"?token={token}" if token else "")
    server = app[SERVER]
    announce(f"lp-live serve: open {url} ({server.config.engine.mode} engine on {server.device}, "
             f"{server.models.kind} weights, up to {serve.max_sessions} streams)")
    if generated:
        announce(f"lp-live serve: access token (printed once; pass --token to choose one): {token}")
    if context is None and not is_loopback(serve.host):
        announce("lp-live serve: warning: browsers give the camera only to HTTPS pages or localhost; "
                 "pass --cert and --key")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
