"""The hotkeys, declared once: `Controls` acts on them, the HUD, the CLI help and the README list them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hotkey:
    key: str
    label: str  # short, for the HUD's legend
    action: str  # what it does, for help texts


HOTKEYS: tuple[Hotkey, ...] = (
    Hotkey("b", "base/opt", "toggle baseline/optimized engine"),
    Hotkey("r", "re-anchor", "re-anchor the neutral pose at the current driving frame"),
    Hotkey("p", "paste-back", "toggle paste-back"),
    Hotkey("s", "stitching", "toggle stitching"),
    Hotkey("m", "mirror", "toggle mirror"),
    Hotkey("1-9", "photo", "switch to source photo 1-9 (--source given several times, or a folder)"),
    Hotkey("d", "driving", "toggle a small picture of the driving camera (to align the head)"),
    Hotkey("i", "details", "toggle the HUD's details (every figure and these keys) and its compact line"),
    Hotkey("h", "HUD", "toggle HUD"),
    Hotkey("q", "quit", "quit (also Esc)"),
)
KEYS: dict[str, str] = {h.key: h.action for h in HOTKEYS}
PHOTO_KEYS = "123456789"  # the "1-9" entry: photo n is key n


COMPACT_KEYS = ("i", "h", "q")  # the compact HUD's legend: how to see more, hide it, quit


def legend(keys: tuple[str, ...] | None = None) -> str:
    """The HUD's key legend on one line: every key, or those of `keys`."""
    return "  ".join(f"{h.key} {h.label}" for h in HOTKEYS if keys is None or h.key in keys)


def describe() -> str:
    """The keys in words, for help texts: "b toggle baseline/optimized engine, r ..."."""
    return ", ".join(f"{h.key} {h.action}" for h in HOTKEYS)
