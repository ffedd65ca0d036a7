"""The checks an SDP offer passes before a session spends anything on it.

aiortc's parser is lenient (it skips lines it does not understand and raises
assorted exceptions on garbage); these checks refuse what is not a well-formed
offer with media, with a message that says what is wrong.
"""

from __future__ import annotations

import re

MAX_SDP_BYTES = 64 * 1024
# RFC 8839 §5.4: ice-ufrag 4-256 and ice-pwd 22-256 ice-chars (ALPHA / DIGIT / "+" / "/")
_ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
MAX_MEDIA_SECTIONS = 16  # a browser offers 2-3 (audio, video, data channel); each one costs transports


class OfferError(ValueError):
    """The SDP offer is refused; ``status`` is the HTTP status to answer (400, or 413 when too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_offer(sdp: str) -> None:
    """Refuse what is not an SDP offer with media before any resource is spent on it."""
    from aiortc.sdp import SessionDescription

    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise OfferError(f"the SDP offer is over {MAX_SDP_BYTES} bytes", 413)
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("the body's 'sdp' is not an SDP offer (it must start with v=0)")
    check_sdp_lines(sdp)
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser raises ValueError, KeyError, IndexError... on garbage
        raise OfferError(f"the SDP offer does not parse: {exc or type(exc).__name__}") from exc
    if not parsed.media:
        raise OfferError("the SDP offer has no media sections")
    if len(parsed.media) > MAX_MEDIA_SECTIONS:
        raise OfferError(
            f"the SDP offer has {len(parsed.media)} media sections (at most {MAX_MEDIA_SECTIONS})"
        )
    mids = {media.rtp.muxId for media in parsed.media if media.rtp.muxId}
    for group in parsed.group:
        unknown = [str(item) for item in group.items if str(item) not in mids]
        if unknown:
            raise OfferError(f"the SDP offer's a=group:{group.semantic} names unknown mids {unknown[:5]}")
    from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS

    for media in parsed.media:
        if not 0 <= media.port <= 65535:
            raise OfferError(f"the SDP offer's {media.kind} m-line has port {media.port} (must be 0..65535)")
        ice = media.ice  # missing ones are refused by aiortc ("ICE username fragment or password is missing")
        if ice is not None and ice.usernameFragment and ice.password:
            if not (_ICE_UFRAG.fullmatch(ice.usernameFragment) and _ICE_PWD.fullmatch(ice.password)):
                raise OfferError(
                    f"the SDP offer's {media.kind} m-line has a malformed ice-ufrag or ice-pwd "
                    "(4-256 and 22-256 characters of A-Z a-z 0-9 + /)"
                )
        # without a fingerprint we can check, the DTLS handshake fails later: refuse before spending on it
        fingerprints = media.dtls.fingerprints if media.dtls is not None else []
        if not any(f.algorithm.lower() in X509_DIGEST_ALGORITHMS for f in fingerprints):
            raise OfferError(
                f"the SDP offer's {media.kind} m-line has no DTLS fingerprint "
                f"(a=fingerprint with one of {', '.join(sorted(X509_DIGEST_ALGORITHMS))})"
            )


def check_sdp_lines(sdp: str) -> None:
    """Every line ``<letter>=<value>``, ended by CRLF or LF (RFC 8866 §5): no bare CR, no other lines.

    aiortc's parser skips lines it does not understand, so an offer with, say, an HTTP response
    spliced into it (CRLF injection) or CR-only line ends would otherwise pass.
    """
    lines = sdp.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the final line end
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise OfferError(f"the SDP offer's line {number} is not <letter>=<value>: {line[:40]!r}")
        if "\r" in line or "\x00" in line:
            raise OfferError(f"the SDP offer's line {number} has a bare CR or a NUL byte")
