"""Face landmarks for one image, run inside the mediapipe environment.

This script is executed by :mod:`engines.create.face_env` with the Python of
the separate mediapipe 0.10.21 virtual environment (mediapipe pins
protobuf<5 and numpy<2, which the runtime environment cannot have). It must
not import anything from splatcast.

Usage: ``python landmarks_worker.py IMAGE [MAX_FACES]``. Prints one JSON object
on stdout::

    {"width": W, "height": H,
     "faces": [{"landmarks": [[x_px, y_px, z_px], ...478...]}, ...]}

``z_px`` is mediapipe's relative depth in the same pixel units as x (smaller
is closer to the camera). Exit status 0 on success (also when no face is
found), 2 on an unreadable image, 3 when mediapipe is missing.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: landmarks_worker.py IMAGE [MAX_FACES]\n")
        return 2
    path = argv[1]
    max_faces = int(argv[2]) if len(argv) > 2 else 4
    try:
        import cv2
        import mediapipe as mp
    except ImportError as exc:
        sys.stderr.write(f"mediapipe is not importable in this environment: {exc}\n")
        return 3
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        sys.stderr.write(f"cannot read image {path}\n")
        return 2
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    faces = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces, min_detection_confidence=0.5
    ) as mesh:
        result = mesh.process(rgb)
    for face in result.multi_face_landmarks or []:
        points = [[lm.x * width, lm.y * height, lm.z * width] for lm in face.landmark]
        faces.append({"landmarks": points})
    sys.stdout.write(json.dumps({"width": width, "height": height, "faces": faces}))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
