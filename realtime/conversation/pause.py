"""The user pausing: Silero VAD's word, before its stop, that speech may have ended.

Pipecat's VAD declares the user stopped after ``stop_secs`` (0.2 s) of
non-speech; only then does the segmented STT start Whisper, and the reply
waits for Whisper. But the VAD knows sooner: its state goes SPEAKING →
STOPPING at the first quiet analysis window (32 ms), and a stop that is
coming is a STOPPING spell that did not end. :class:`PauseSileroVAD` tells a
:class:`PauseListener` once a spell has lasted ``pause_s`` (and again if
speech resumes), so Whisper can start on the speech so far
(:class:`realtime.conversation.services.SharedWhisperSTTService`) and the
transcript is ready ~0.1 s sooner when the stop comes; a spell that ends in
speech throws that transcript away. Within a sentence Silero's dips into
STOPPING last one window (Piper voices; a comma pause reaches a full stop
anyway), so ``pause_s`` of three windows rarely starts Whisper for nothing.

The VAD itself is unchanged: the same states, the same stop, the same turns.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

PAUSE_S = 0.09  # a STOPPING spell this long (3 Silero windows of 32 ms) counts as a pause


class PauseListener(Protocol):
    """Told (on the event loop) when the user pauses and when a pause ends in speech."""

    def user_paused(self) -> None: ...

    def user_resumed(self) -> None: ...


class PauseSileroVAD(SileroVADAnalyzer):
    """Pipecat's Silero VAD that also reports pauses (module docstring)."""

    def __init__(
        self, *, listener: PauseListener | None = None, pause_s: float = PAUSE_S, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.listen_for_pauses(listener, pause_s)

    def listen_for_pauses(self, listener: PauseListener | None, pause_s: float = PAUSE_S) -> None:
        """Tell ``listener`` of pauses of ``pause_s`` (for subclasses that skip ``__init__``'s model load)."""
        if pause_s <= 0:
            raise ValueError(f"pause_s must be > 0, got {pause_s}")
        self.listener = listener
        self.pause_s = pause_s
        self._paused = False  # the listener was told of the current STOPPING spell

    async def analyze_audio(self, buffer: bytes) -> VADState:
        state = await super().analyze_audio(buffer)
        if state == VADState.STOPPING:
            quiet_s = self._vad_stopping_count * self.num_frames_required() / self.sample_rate
            if not self._paused and quiet_s >= self.pause_s - 1e-6:
                self._paused = True
                if self.listener is not None:
                    self.listener.user_paused()
        elif self._paused:
            self._paused = False
            if state == VADState.SPEAKING and self.listener is not None:
                self.listener.user_resumed()
        return state
