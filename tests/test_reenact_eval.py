"""Self-reenactment metrics against answers known in advance, and the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from engines.create.reenact_eval import (
    LIP_POINTS,
    EvalReport,
    FrameScores,
    face_mask,
    mouth_box,
    mouth_lmd,
    pose_error_deg,
    psnr,
    score_frame,
    ssim,
    summarise,
    write_report,
)

pytest.importorskip("scipy")


def _image(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (h // 8, w // 8, 3)).astype(np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocks: structure for SSIM


def _landmarks(w: float = 200.0, h: float = 200.0) -> np.ndarray:
    """[478, 3] landmarks on a synthetic face: a circle of face oval, eyes 100 px apart, lips in the lower half."""
    from engines.create.photo import FACE_OVAL, LIPS_OUTER

    lm = np.full((478, 3), np.nan)
    lm[:, :2] = [w / 2, h / 2]
    lm[:, 2] = 0.0
    ang = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    lm[list(FACE_OVAL), 0] = w / 2 + 70 * np.cos(ang)
    lm[list(FACE_OVAL), 1] = h / 2 + 85 * np.sin(ang)
    lm[33, :2] = [w / 2 - 50, h / 2 - 20]
    lm[263, :2] = [w / 2 + 50, h / 2 - 20]
    ang = np.linspace(0, 2 * np.pi, len(LIPS_OUTER), endpoint=False)
    lm[list(LIPS_OUTER), 0] = w / 2 + 30 * np.cos(ang)
    lm[list(LIPS_OUTER), 1] = h / 2 + 45 + 10 * np.sin(ang)
    return lm


def test_identical_images_give_inf_psnr_and_ssim_one() -> None:
    a = _image()
    assert psnr(a, a.copy()) == math.inf
    assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    mask = np.zeros(a.shape[:2], bool)
    mask[10:40, 20:60] = True
    assert psnr(a, a, mask) == math.inf and ssim(a, a, mask) == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_known_error() -> None:
    a = _image()
    b = (a.astype(int) + 10).astype(np.uint8)  # every channel off by 10 levels: MSE 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-9)
    # the mask selects pixels: an error outside it does not count
    c = a.copy()
    c[:, 64:] = 0
    mask = np.zeros(a.shape[:2], bool)
    mask[:, :64] = True
    assert psnr(a, c, mask) == math.inf and psnr(a, c) < 20
    # float images use a peak of 1
    fa = a.astype(np.float64) / 255
    assert psnr(fa, fa + 0.1) == pytest.approx(20.0, abs=1e-9)


def test_ssim_falls_with_damage_and_ignores_a_brightness_it_can_tell() -> None:
    a = _image()
    rng = np.random.default_rng(1)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    s1, s2 = ssim(a, noisy), ssim(a, noisier)
    assert 0.0 < s2 < s1 < 1.0
    assert ssim(a, 255 - a) < 0.0  # inverted structure: negative correlation


def test_face_mask_and_mouth_box_follow_the_landmarks() -> None:
    lm = _landmarks()
    mask = face_mask(lm, (200, 200))
    assert mask[100, 100] and not mask[5, 5]
    assert mask.sum() == pytest.approx(np.pi * 70 * 85, rel=0.03)  # the oval's area
    x0, y0, x1, y1 = mouth_box(lm, (200, 200))
    assert x0 < 70 < 130 < x1 and y0 < 135 < 155 < y1
    assert abs((x1 - x0) - (y1 - y0)) <= 1  # square


def test_lmd_of_a_known_shift() -> None:
    real = _landmarks()
    pred = real.copy()
    pred[list(LIP_POINTS), 0] += 3.0
    pred[list(LIP_POINTS), 1] += 4.0  # every lip point 5 px away; eyes 100 px apart
    assert mouth_lmd(pred, real) == pytest.approx(0.05, abs=1e-12)
    other = real.copy()
    other[:300, 1] += 50.0  # points that are not lips do not count
    other[list(LIP_POINTS), 1] = real[list(LIP_POINTS), 1]
    assert mouth_lmd(other, real) == pytest.approx(0.0, abs=1e-12)


def test_pose_error_is_the_rotation_angle() -> None:
    d = math.radians
    assert pose_error_deg(np.zeros(3), np.zeros(3)) == pytest.approx(0.0, abs=1e-4)
    assert pose_error_deg(np.array([0, d(10), 0]), np.zeros(3)) == pytest.approx(10.0, abs=1e-3)
    assert pose_error_deg(np.array([d(3), 0, 0]), np.array([0, 0, d(4)])) == pytest.approx(5.0, abs=0.02)


def test_score_frame_and_summary() -> None:
    real = np.full((200, 200, 3), 120, np.uint8)
    real[::2] = 60
    render = real.copy()
    lm = _landmarks()
    s = score_frame(7, real, render, lm, lm, np.zeros(3), np.zeros(3))
    assert s.frame == 7 and s.psnr_face == math.inf and s.ssim_mouth == pytest.approx(1.0)
    assert s.lmd == 0.0 and s.pose_err_deg == pytest.approx(0.0, abs=1e-4)
    worse = render.copy()
    worse[130:170, 60:140] = 0  # damage the mouth only
    t = score_frame(8, real, worse, lm, None)
    assert t.psnr_mouth < t.psnr_face < math.inf and math.isnan(t.lmd) and math.isnan(t.pose_err_deg)
    none = score_frame(9, real, worse, None, None)
    assert all(math.isnan(getattr(none, k)) for k in ("psnr_face", "psnr_mouth", "lmd"))
    summ = summarise([s, t, none])
    assert summ["lmd"]["frames"] == 1 and summ["psnr_mouth"]["frames"] == 2


def _scores(psnr_face: float, psnr_mouth: float, lmd: float, n: int = 4) -> list[FrameScores]:
    return [FrameScores(k, psnr_face, 0.9, psnr_mouth, 0.8, lmd, 1.0) for k in range(n)]


def test_targets_and_report_files(tmp_path: Path) -> None:
    rep = EvalReport(
        "clip.mp4",
        [100, 101, 102, 103],
        {"replica": _scores(31.0, 27.0, 0.03), "one-shot": _scores(28.5, 25.5, 0.05)},
        info={"build_s": 12.0},
    )
    t = rep.targets()
    assert t["psnr_face_gain_db"] == pytest.approx(2.5) and t["psnr_face_met"]
    assert t["psnr_mouth_gain_db"] == pytest.approx(1.5) and not t["psnr_mouth_met"]
    assert t["lmd_ratio"] == pytest.approx(0.6) and t["lmd_met"]
    real = [_image(k, 64, 64) for k in range(4)]
    renders = {"replica": [np.roll(r, 1, axis=1) for r in real], "one-shot": [r // 2 for r in real]}
    paths = write_report(rep, tmp_path, real, renders, fps=25)
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["replica"]["psnr_face"]["mean"] == pytest.approx(31.0)
    assert data["targets"]["lmd_met"] is True and len(data["per_frame"]["one-shot"]) == 4
    md = paths["markdown"].read_text()
    assert "| replica | 31.00 |" in md and "not met" in md
    from PIL import Image

    sheet = np.asarray(Image.open(paths["sheet"]))
    assert sheet.shape[1] == 3 * 64 and sheet.shape[0] > 4 * 64  # real | replica | one-shot, 4 rows + labels
    from engines.create.mp4 import read_frames

    video = read_frames(paths["video"])
    assert len(video) == 4 and video[0].shape[1] == 3 * 64
