"""Before/after frame strip for the README: a happy and a sad sentence, expressiveness 0 and 0.6.

    PYTHONPATH=. python scripts/expression_strip.py docs/expression.png

Each row is one clip rendered by ``splatcast say`` (the bundled avatar, 512 px),
cropped to the face: five frames spread over the sentence, then the clip's
last frame (the face after the voice stops, the emotion still held).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from realtime.media.offline import render_mp4
from realtime.settings import load_settings

HAPPY = "I am so happy to see you again, this is wonderful news!"
SAD = "I am so sorry, the old dog died last night and we all miss him."
CROP = (150, 100, 362, 340)  # x0, y0, x1, y1 of the face in the 512 px frame
COLUMNS = 6
THUMB = 150
LABEL_W = 190


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def row(frames: list[np.ndarray]) -> list[Image.Image]:
    picks = [*np.linspace(10, len(frames) - 12, COLUMNS - 1).round().astype(int).tolist(), len(frames) - 1]
    x0, y0, x1, y1 = CROP
    h = round(THUMB * (y1 - y0) / (x1 - x0))
    return [Image.fromarray(frames[i][y0:y1, x0:x1]).resize((THUMB, h), Image.LANCZOS) for i in picks]


def main(out: Path) -> None:
    settings = load_settings(env={})
    rows: list[tuple[str, list[Image.Image]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("happy", HAPPY), ("sad", SAD)):
            for e in (0.0, 0.6):
                clip = Path(tmp) / f"{name}{e}.mp4"
                render_mp4(settings, clip, text=text, progress=False, expressiveness=e)
                label = f"{name} sentence\nexpressiveness {e:g}" + ("\n(before)" if e == 0 else "\n(after)")
                rows.append((label, row(frames_of(clip))))
    h = rows[0][1][0].height
    sheet = Image.new("RGB", (LABEL_W + COLUMNS * THUMB, len(rows) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        draw.multiline_text((8, r * h + h // 2 - 24), label, fill="black", spacing=4)
        for c, img in enumerate(images):
            sheet.paste(img, (LABEL_W + c * THUMB, r * h))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/expression.png"))
