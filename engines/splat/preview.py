"""Preview sheet: a labelled grid of an avatar's mouth shapes, blink, smile and head poses.

Viseme shapes come from the a2v viseme table (:func:`engines.a2v.visemes.viseme_targets`,
ARKit targets per viseme) added to the avatar's rest expression
(:meth:`engines.splat.avatar.Avatar.rest`).
"""

from __future__ import annotations

import math

import numpy as np

from engines.a2v.visemes import viseme_targets as table
from engines.arkit import VISEMES
from engines.splat.avatar import Avatar
from engines.splat.rasterize import RenderBackend

YAW_DEG = 15.0
PITCH_DEG = 10.0


def viseme_targets(viseme: str) -> dict[str, float]:
    """ARKit channel targets of one viseme (from the a2v viseme table, :mod:`engines.a2v.visemes`)."""
    if viseme not in VISEMES:
        raise KeyError(f"unknown viseme {viseme!r}; expected one of {VISEMES}")
    return {k: v for k, v in table(viseme).items() if v != 0.0}


def viseme_params(avatar: Avatar, viseme: str, batch: int = 1) -> np.ndarray:
    """Rig parameters float32 [batch, C] of ``viseme`` on top of the avatar's rest expression."""
    params = avatar.rest(batch)
    for name, value in viseme_targets(viseme).items():
        if name in avatar.channels:
            params[:, avatar.channel_index(name)] += value
    return params


def preview_poses() -> list[tuple[str, dict[str, float]]]:
    """(label, head-pose channel values) of the preview's head poses, neutral first."""
    y, p = math.radians(YAW_DEG), math.radians(PITCH_DEG)
    return [
        ("front", {}),
        (f"yaw +{YAW_DEG:.0f}°", {"headYaw": y}),
        (f"yaw -{YAW_DEG:.0f}°", {"headYaw": -y}),
        (f"pitch +{PITCH_DEG:.0f}°", {"headPitch": p}),
        (f"pitch -{PITCH_DEG:.0f}°", {"headPitch": -p}),
    ]


def preview_cells(avatar: Avatar) -> list[tuple[str, np.ndarray]]:
    """(label, params [C]) of every cell: photo, the 15 visemes, blink, smile, head poses."""
    cells: list[tuple[str, np.ndarray]] = [("photo (neutral)", avatar.neutral(1)[0])]
    for v in VISEMES:
        cells.append((v, viseme_params(avatar, v)[0]))
    rest = avatar.rest(1)[0]
    blink = rest.copy()
    smile = rest.copy()
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        blink[avatar.channel_index(name)] = 1.0
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        smile[avatar.channel_index(name)] += 1.0
    cells += [("blink", blink), ("smile", smile)]
    for label, pose in preview_poses()[1:]:
        p = rest.copy()
        for name, value in pose.items():
            p[avatar.channel_index(name)] = value
        cells.append((label, p))
    return cells


def head_crop(avatar: Avatar) -> tuple[int, int, int]:
    """(x0, y0, side) of a square around the head at the camera's reference size."""
    meta = avatar.metadata
    eyes = meta.get("eyes_px", {})
    box = meta.get("mouth_box")
    cam = avatar.camera
    if not eyes or not box:
        return 0, 0, min(cam.width, cam.height)
    el, er = np.asarray(eyes["left"]), np.asarray(eyes["right"])
    mouth = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    centre = (el + er) / 2 * 0.55 + mouth * 0.45
    side = int(min(max(3.6 * float(np.linalg.norm(el - er)), 64), cam.width, cam.height))
    x0 = int(np.clip(centre[0] - side / 2, 0, cam.width - side))
    y0 = int(np.clip(centre[1] - side / 2, 0, cam.height - side))
    return x0, y0, side


def render_sheet(
    avatar: Avatar, backend: RenderBackend = "cpu", cell: int = 200, columns: int = 6
) -> np.ndarray:
    """The labelled preview grid as uint8 [H, W, 3]."""
    from PIL import Image, ImageDraw

    from engines.splat.render import render

    cells = preview_cells(avatar)
    params = np.stack([p for _, p in cells]).astype(np.float32)
    cam = avatar.camera
    frames = np.concatenate(
        [
            render(avatar, params[i : i + 6], size=(cam.height, cam.width), backend=backend)
            for i in range(0, len(params), 6)
        ]
    )
    x0, y0, side = head_crop(avatar)
    label_h = 22
    rows = math.ceil(len(cells) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, ((label, _), frame) in enumerate(zip(cells, frames, strict=True)):
        tile = Image.fromarray(frame[y0 : y0 + side, x0 : x0 + side]).resize(
            (cell, cell), Image.Resampling.LANCZOS
        )
        cx, cy = (k % columns) * cell, (k // columns) * (cell + label_h)
        sheet.paste(tile, (cx, cy + label_h))
        draw.text((cx + 6, cy + 5), label, fill=(0, 0, 0))
    return np.asarray(sheet)


def render_preview(avatar: Avatar, side: int = 256, backend: RenderBackend = "cpu") -> np.ndarray:
    """A square head-and-shoulders picture of the avatar at rest (the library's preview): uint8 [side, side, 3]."""
    from PIL import Image

    from engines.splat.render import render

    cam = avatar.camera
    frame = render(avatar, avatar.rest(1), size=(cam.height, cam.width), backend=backend)[0]
    x0, y0, crop = head_crop(avatar)
    # the head crop of the sheet is tight on the face; the preview shows some hair and shoulders too
    grow = min(int(crop * 1.5), cam.width, cam.height)
    cx, cy = x0 + crop // 2, y0 + crop // 2
    x0 = int(np.clip(cx - grow // 2, 0, cam.width - grow))
    y0 = int(np.clip(cy - grow // 2, 0, cam.height - grow))
    tile = Image.fromarray(frame[y0 : y0 + grow, x0 : x0 + grow]).resize(
        (side, side), Image.Resampling.LANCZOS
    )
    return np.asarray(tile)
