"""splatcast for Pipecat: the avatar video service, the SmallWebRTC transport, and ``splatcast bot``.

What docs/pipecat.md imports lives here::

    from realtime.pipecat import SplatAvatarService, SplatSmallWebRTCTransport, avatar_transport_params
"""

from realtime.media.engine import Engine
from realtime.pipecat.service import SplatAvatarError, SplatAvatarService
from realtime.pipecat.transport import (
    AudioClockVideoTrack,
    SplatSmallWebRTCTransport,
    avatar_transport_params,
)

__all__ = [
    "AudioClockVideoTrack",
    "Engine",
    "SplatAvatarError",
    "SplatAvatarService",
    "SplatSmallWebRTCTransport",
    "avatar_transport_params",
]
