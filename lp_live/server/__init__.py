"""`lp-live serve`: a browser page where a webcam drives the portrait over WebRTC, many people on one engine.

    app.py        the HTTP API (aiohttp), access token, limits, WebRTC offers (aiortc)
    checks.py     the host, the token and the SDP offer, checked before anything is done with them
    sources.py    uploaded photos: sized, decoded, checked, cropped once
    sessions.py   one connection: its source, settings, newest frame, output track
    scheduler.py  the step: the newest frame of every session as one mixed-source batch
    engines.py    the only place the server calls the engines
    bench.py      `lp-live serve-bench`: N loopback clients, measured
    page/         the page (HTML, script, style)
"""

from .app import SERVER, background_server, create_app, serve_forever

__all__ = ["SERVER", "background_server", "create_app", "serve_forever"]
