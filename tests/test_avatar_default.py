"""The shipped default avatar meets the fidelity targets of issue 3.

* neutral render vs the source photo crop, face region: PSNR ≥ 30 dB;
* lip aperture orders the visemes plausibly (aa and O widest; PP, FF, sil closed) and PP seals the lips;
* no holes: alpha ≥ 0.99 over the head silhouette for every viseme at every preview pose.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines import assets
from engines.arkit import VISEMES
from engines.splat.avatar import LAYER_JAW, LAYER_MOUTH, Avatar, load_avatar
from engines.splat.measure import head_silhouette, lip_aperture_px, without_static
from engines.splat.preview import preview_poses, viseme_params
from engines.splat.render import render


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return load_avatar(assets.default_avatar())


def test_file_is_small_and_described(avatar: Avatar) -> None:
    path = assets.default_avatar()
    assert path.stat().st_size <= 5_000_000
    assert 20_000 <= avatar.count <= 40_000
    meta = avatar.metadata
    assert "public domain" in meta["provenance"]["licence"]
    assert "astronaut" in meta["provenance"]["source"]
    assert "--astronaut" in meta["provenance"]["rebuild"]
    assert (meta["image_size"][0], meta["image_size"][1]) == (512, 512)
    x0, y0, x1, y1 = meta["mouth_box"]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert len(meta["inner_lip_upper_px"]) == len(meta["inner_lip_lower_px"]) == 9
    assert set(meta["eyes_px"]) == {"left", "right"}
    assert (
        meta["eyes_px"]["left"][0] > meta["eyes_px"]["right"][0]
    )  # the subject's left eye is on the image right


def test_neutral_reproduces_the_photo(avatar: Avatar) -> None:
    pytest.importorskip("skimage")
    from engines.create.photo import _mask, astronaut_image, crop_photo

    meta = avatar.metadata
    crop = crop_photo(astronaut_image(), tuple(meta["crop_box_src"]), 512).astype(np.float64)
    rgb = render(avatar, avatar.neutral(1), size=(512, 512), backend="cpu")[0].astype(np.float64)
    face = _mask(np.asarray(meta["face_oval_px"]), 512)
    assert face.sum() > 20_000  # the face fills a good part of the picture
    mse = np.mean((rgb[face] - crop[face]) ** 2)
    psnr = 10 * np.log10(255.0**2 / mse)
    assert psnr >= 30.0, f"face-region PSNR {psnr:.2f} dB"
    # and it is the face, not a flat colour: the rest pose (lips closed) differs in the mouth
    closed = render(avatar, avatar.rest(1), size=(512, 512), backend="cpu")[0].astype(np.float64)
    x0, y0, x1, y1 = (int(v) for v in meta["mouth_box"])
    assert np.abs(closed[y0:y1, x0:x1] - rgb[y0:y1, x0:x1]).mean() > 3.0


def test_lip_aperture_orders_the_visemes(avatar: Avatar) -> None:
    params = np.concatenate([viseme_params(avatar, v) for v in VISEMES])
    aperture = dict(zip(VISEMES, lip_aperture_px(avatar, params), strict=True))
    widest = sorted(aperture, key=aperture.__getitem__, reverse=True)[:2]
    assert set(widest) == {"aa", "O"}, aperture
    assert aperture["aa"] > 25.0  # a wide-open mouth, at 512 px
    for closed in ("PP", "FF", "sil"):
        assert aperture[closed] <= 1.0, (closed, aperture[closed])
    assert aperture["PP"] <= 0.0  # pressed: the inner lips meet (or overlap)
    for v in ("DD", "kk", "E", "I", "CH"):
        assert aperture[v] >= 4.0, (v, aperture[v])
    assert aperture["E"] > aperture["I"] > aperture["PP"]
    # the photo itself shows teeth: neutral is open, rest (the closed-mouth expression) is not
    assert lip_aperture_px(avatar, avatar.neutral(1))[0] > 5.0
    assert lip_aperture_px(avatar, avatar.rest(1))[0] <= 0.0


def test_pp_seals_the_lips_over_the_teeth(avatar: Avatar) -> None:
    marked = without_static(avatar)
    marked.colors = avatar.colors.copy()
    inner = np.isin(avatar.layers, [LAYER_JAW, LAYER_MOUTH])
    marked.colors[inner] = [0.0, 1.0, 0.0]  # the inner mouth in pure green
    x0, y0, x1, y1 = (int(v) for v in avatar.metadata["mouth_box"])
    frames = render(marked, np.concatenate([viseme_params(avatar, "PP"), avatar.neutral(1)]), backend="cpu")
    box = frames[:, y0:y1, x0:x1].astype(int)
    green = (box[..., 1] > 150) & (box[..., 0] < 90) & (box[..., 2] < 90)
    assert green[1].sum() > 100  # neutral: the photo's teeth are the inner-mouth layer, visible
    assert green[0].sum() == 0  # PP: nothing of the inner mouth shows


def test_no_holes_for_any_viseme_at_any_pose(avatar: Avatar) -> None:
    assert_no_holes(avatar)


def assert_no_holes(avatar: Avatar) -> None:
    """Alpha ≥ 0.99 over the head silhouette for every viseme at every preview pose (also used on fresh
    photo avatars: tests/test_create_photo.py)."""
    head_only = without_static(avatar)  # the background would hide holes in the head
    base = np.concatenate([viseme_params(avatar, v) for v in VISEMES])
    for label, pose_values in preview_poses():
        params = base.copy()
        for name, value in pose_values.items():
            params[:, avatar.channel_index(name)] = value
        _, alpha = render(head_only, params, size=(512, 512), backend="cpu", return_alpha=True)
        silhouette = head_silhouette(avatar, params)
        for k, v in enumerate(VISEMES):
            inside = alpha[k][silhouette[k]]
            assert inside.size > 30_000
            assert inside.min() >= 0.99, f"{label} {v}: {(inside < 0.99).sum()} px below alpha 0.99"
