"""The user's audio without aiortc's 4-packet prefetch (realtime.media.mic_jitter)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from realtime.media.mic_jitter import listen_promptly


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960, payload=bytes([seq]))
    p._data = p.payload  # type: ignore[attr-defined]  # the receiver sets it (depayloaded) before buffering
    return p


def frames_out(buffer: JitterBuffer, order: list[int]) -> list[int | None]:
    """Which packet's frame each arrival (in ``order``) hands to the decoder (None: none yet)."""
    out: list[int | None] = []
    for seq in order:
        _pli, frame = buffer.add(packet(seq))
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def buffer_of(receiver: object) -> JitterBuffer:
    found = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    assert isinstance(found, JitterBuffer)
    return found


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    connection = RTCPeerConnection()
    try:
        yield connection
    finally:
        await connection.close()


async def test_an_audio_receiver_hands_each_packet_on_once_the_next_is_in(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    assert frames_out(buffer_of(receiver), [1, 2, 3, 4, 5, 6]) == [None, None, None, None, 1, 2]
    assert listen_promptly(receiver)
    assert frames_out(buffer_of(receiver), [1, 2, 3, 4, 5, 6]) == [None, 1, 2, 3, 4, 5]


async def test_out_of_order_packets_still_come_out_in_order(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    listen_promptly(receiver)
    # packet 3 is late: 2 waits at the gap until 3 is in, then 3 and 4 follow
    assert frames_out(buffer_of(receiver), [1, 2, 4, 3, 5, 6]) == [None, 1, None, 2, 3, 4]


async def test_a_video_receiver_is_left_alone(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    before = buffer_of(receiver)
    assert not listen_promptly(receiver)
    assert buffer_of(receiver) is before


async def test_the_bots_smallwebrtc_connection_listens_without_the_prefetch() -> None:
    """``splatcast bot``: Pipecat's SmallWebRTCConnection, given a browser-like offer (audio sendrecv
    first), gets the prompt jitter buffer on its audio receiver; its video receiver is left alone."""
    from aiortc.mediastreams import AudioStreamTrack
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

    from realtime.pipecat.bot import listen_to_mic_promptly

    browser = RTCPeerConnection()
    connection = SmallWebRTCConnection()
    try:
        browser.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        browser.addTransceiver("video", direction="recvonly")
        await browser.setLocalDescription(await browser.createOffer())
        await connection.initialize(sdp=browser.localDescription.sdp, type="offer")
        assert buffer_of(_audio_receiver(connection.pc))._prefetch == 4  # aiortc's own, before
        assert listen_to_mic_promptly(connection) == 1
        assert buffer_of(_audio_receiver(connection.pc))._prefetch == 1
    finally:
        await connection.disconnect()
        await browser.close()


def _audio_receiver(pc: RTCPeerConnection) -> object:
    (receiver,) = [t.receiver for t in pc.getTransceivers() if t.kind == "audio"]
    return receiver
