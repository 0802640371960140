"""Stop strings matched across token (and piece) boundaries, cut from the output.

A stop string can arrive split over several pieces (``"\\nUs"`` then ``"er:"``), so text that could be the start
of a stop string is held back until the next piece shows whether it is; everything else is released at once,
which keeps streaming latency unchanged when no stop string is near. Held text is at most the longest stop
string minus one character.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class StopMatcher:
    """Feeds text pieces, returns what is safe to emit, and says when a stop string was seen."""

    __slots__ = ("_held", "_stops", "stopped")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the text that can be emitted now (text before a stop string, if one ended)."""
        if not self._stops:
            return piece
        text = self._held + piece
        # The stop string that *completes* first ends generation (as it would, token by token); if several
        # end at the same character, the longest one is cut.
        found = [(i + len(s), i) for s in self._stops if (i := text.find(s)) >= 0]
        if found:
            cut = min(found)[1]
            self._held = ""
            self.stopped = True
            return text[:cut]
        keep = self._partial_suffix(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The held-back text, at the end of generation when no stop string completed."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best
