"""The user's microphone without aiortc's 80 ms of audio prefetch.

aiortc gives every audio receiver a jitter buffer that hands a packet to the
Opus decoder only once four later packets are in (``JitterBuffer(capacity=16,
prefetch=4)``): with 20 ms packets every word the user says reaches the
server's VAD and Whisper 80 ms late, and so does the end of their speech, which
starts the reply. The prefetch smooths playback, and nothing here plays the
user's voice: the conversation pipeline only listens. With a prefetch of one
packet a frame is handed on as soon as the next one is in; out-of-order
packets are still put back in order (the buffer waits at a gap as before) and
a lost one is still skipped once the buffer's 16 packets are full, as with
aiortc's default. Measured inside a call (``bench conversation --call``): the
VAD's stop came ~60 ms sooner after the user's last word.

aiortc has no setting for it, so :func:`listen_promptly` replaces the
receiver's buffer (before media flows) instead of forking the receiver.

Example::

    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            listen_promptly(transceiver.receiver)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

MIC_PREFETCH = 1  # packets after a frame that must be in before it is decoded (aiortc: 4)
_CAPACITY = 16  # aiortc's audio jitter buffer size (packets), kept
_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc's private attribute (RTCRtpReceiver.__jitter_buffer)


def listen_promptly(receiver: Any, prefetch: int = MIC_PREFETCH) -> bool:
    """Give an aiortc audio ``RTCRtpReceiver`` a jitter buffer with ``prefetch`` packets.

    Call it before media flows (after ``setRemoteDescription``). Returns False,
    and leaves the receiver as it was, when it is not an audio receiver or this
    aiortc keeps its buffer elsewhere.
    """
    from aiortc.jitterbuffer import JitterBuffer

    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    current = getattr(receiver, _ATTR, None)
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio" or not isinstance(current, JitterBuffer):
        logger.warning("mic jitter: %r has no aiortc audio jitter buffer; keeping its own", receiver)
        return False
    setattr(receiver, _ATTR, JitterBuffer(capacity=_CAPACITY, prefetch=prefetch))
    return True
