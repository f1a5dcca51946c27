"""Who the citizen hears: the staff audio floor.

Several staff viewers may talk, the citizen receives ONE audio track. Rule: the floor
goes to the most recent staff viewer who started speaking while the floor was free; the
holder keeps it while speaking and loses it after ``release_after`` seconds of silence
(or on leaving). "Speaking" uses the RFC 6464 audio level the browser puts on each
packet (level <= ``speech_level`` -dBov); a stream without that header extension counts
as speaking whenever it sends. Switching is made seamless by the room track's
sequence/timestamp rewriting (``rewriter.SourceMap``).
"""

from __future__ import annotations

from typing import Any

SPEECH_LEVEL = 50       # -dBov; browsers report ~127 for silence, 20-45 for speech
RELEASE_AFTER = 0.5     # seconds of holder silence before another speaker may take over


class Floor:
    def __init__(self, speech_level: int = SPEECH_LEVEL,
                 release_after: float = RELEASE_AFTER) -> None:
        self.speech_level = speech_level
        self.release_after = release_after
        self.holder: Any = None
        self._last_voice: dict[Any, float] = {}
        self.switches = 0

    def speaking(self, audio_level: Any) -> bool:
        if audio_level is None:
            return True
        try:
            return int(audio_level[1]) <= self.speech_level
        except (TypeError, ValueError, IndexError):
            return True

    def admit(self, source: Any, audio_level: Any, now: float) -> bool:
        """Should this packet from ``source`` reach the citizen? Updates the holder."""
        if self.speaking(audio_level):
            self._last_voice[source] = now
        holder = self.holder
        if source is holder:
            return True
        voice = self._last_voice.get(source)
        if voice is None or voice != now:
            return False  # not speaking right now
        if holder is not None:
            held_voice = self._last_voice.get(holder, -1e9)
            if now - held_voice < self.release_after:
                return False
        self.holder = source
        self.switches += 1
        return True

    def remove(self, source: Any) -> None:
        self._last_voice.pop(source, None)
        if self.holder is source:
            self.holder = None
