"""Small test doubles shared by the conversation and expression tests."""

from __future__ import annotations

from typing import Any

import numpy as np


class CallLogWithEmotion:
    """Records the AvatarSink calls the avatar stage makes, and the emotion that came with each chunk."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.emotions: list[Any] = []

    def push_tts_audio(
        self,
        pcm: np.ndarray,
        sample_rate: int,
        alignments: Any,
        reply: str | None,
        emotion: Any = None,
        emphasis: Any = None,
    ) -> bool:
        self.calls.append(("push_tts_audio", len(pcm)))
        self.emotions.append(emotion)
        return True

    def end_utterance(self) -> None:
        self.calls.append(("end_utterance", None))

    def interrupt(self) -> None:
        self.calls.append(("interrupt", None))

    def set_user_speaking(self, speaking: bool) -> None:
        self.calls.append(("set_user_speaking", speaking))

    def user_pause(self) -> None:
        self.calls.append(("user_pause", None))

    def add_listener(self, fn: Any) -> None:
        pass

    def remove_listener(self, fn: Any) -> None:
        pass
