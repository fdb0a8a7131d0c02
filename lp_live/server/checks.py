"""Checks on what a client sends before the server acts on it: the host, the access token, the SDP offer."""

from __future__ import annotations

import hmac
import ipaddress
import re


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


SDP_LINE = re.compile(r"[a-z]=\S.*")


def sdp_problem(sdp: str) -> str | None:
    """What makes `sdp` no WebRTC offer with a video track, in a few plain words, or None."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        return "an SDP offer starts with the line v=0"
    bad = next((line for line in lines if not SDP_LINE.fullmatch(line)), None)
    if bad is not None:
        return "an SDP offer has only lines like a=..., m=..., c=..."
    if not any(line.startswith("m=video ") for line in lines):
        return "the offer has no video track; send the camera as one video track"
    return None
