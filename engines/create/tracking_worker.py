"""Batched face landmarks for a stream of frames, run inside the mediapipe environment.

Executed by :class:`engines.create.tracking.FaceTracker` with the Python of
the separate mediapipe 0.10.21 environment (see :mod:`engines.create.face_env`);
it must not import anything from splatcast. One process serves a whole clip,
so the face-mesh graph is built once and, in video mode, tracks the face from
frame to frame instead of detecting it every time.

Usage: ``python tracking_worker.py MAX_FACES MODE`` with MODE ``video``
(consecutive frames of one clip) or ``image`` (unrelated images). Protocol on
the standard streams, little-endian binary:

* the worker first writes the line ``SPLATCAST-TRACK 1`` once mediapipe loaded;
* each request is a 12-byte header ``<III`` (width, height, 0) followed by
  width·height·3 bytes of RGB; width 0 ends the session;
* each reply is ``<I`` n_faces followed by n_faces·478·3 float32 values
  (x_px, y_px, z_px) per landmark, biggest face first; z_px is mediapipe's
  relative depth in x's pixel units (smaller is closer to the camera).

Exit status 0 after an end request, 3 when mediapipe is missing, 2 on a
malformed request.
"""

from __future__ import annotations

import struct
import sys

MAGIC = b"SPLATCAST-TRACK 1\n"
N_POINTS = 478


def _read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def main(argv: list[str]) -> int:
    max_faces = int(argv[1]) if len(argv) > 1 else 2
    video = (argv[2] if len(argv) > 2 else "video") == "video"
    try:
        import mediapipe as mp
        import numpy as np
    except ImportError as exc:
        sys.stderr.write(f"mediapipe is not importable in this environment: {exc}\n")
        return 3
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=not video,
        refine_landmarks=True,
        max_num_faces=max_faces,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )
    stdout.write(MAGIC)
    stdout.flush()
    try:
        while True:
            head = _read_exact(stdin, 12)
            if len(head) < 12:
                return 2
            width, height, _ = struct.unpack("<III", head)
            if width == 0:
                return 0
            raw = _read_exact(stdin, width * height * 3)
            if len(raw) != width * height * 3:
                sys.stderr.write("truncated frame\n")
                return 2
            rgb = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
            result = mesh.process(rgb)
            faces = []
            for face in result.multi_face_landmarks or []:
                pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
                pts[:, 0] *= width
                pts[:, 1] *= height
                pts[:, 2] *= width
                faces.append(pts)
            faces.sort(key=lambda f: -float(f[:468, 0].max() - f[:468, 0].min()))
            out = [struct.pack("<I", len(faces))] + [f.astype("<f4").tobytes() for f in faces]
            stdout.write(b"".join(out))
            stdout.flush()
    finally:
        mesh.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
