"""A closed, relaxed rest face from a photo that shows an expression.

A one-shot avatar's neutral pose reproduces its photo, whatever the photo
shows: an open mouth (laughing, talking, a tongue out), a smile, wide eyes.
Motion is added on top of :meth:`engines.splat.avatar.Avatar.rest`, so the
rest expression (``metadata["rest_expression"]``, rig channel values) must
undo what the photo shows. This module measures the photo's expression on its
landmarks and on the rigged avatar and returns that rest expression:

* **open mouth**: the jaw is closed first (a negative ``jawOpen``: the lower
  lip, chin and lower teeth come up, so a wide-open mouth does not close by
  stretching the lips alone), for the part of the opening beyond what lips
  alone part by (:data:`LIP_ONLY_GAP`); then ``mouthPressLeft/Right`` close
  what is left, solved on the avatar's own inner-lip Gaussians so the lips
  just meet (:data:`SEAL_PX` overlap);
* **smile**: mouth corners higher than the lip centre (:data:`SMILE_CURVE`,
  mouth half widths) are lowered by a negative ``mouthSmileLeft/Right`` (read only
  while the lips are less than :data:`SMILE_MAX_GAP` apart: a wide-open jaw
  lowers the lip centre as much as a smile lifts the corners);
* **wide eyes**: lids further apart than :data:`WIDE_EYE` eye half widths are
  brought to :data:`RELAXED_EYE` with ``eyeBlinkLeft/Right``.

Raised brows are not undone: their height above the eye differs from person
to person as much as a raise moves them, so one photo cannot tell.

:func:`mouth_interior_mask` finds where the photo shows the inside of the
mouth (teeth, tongue, cavity), also where it spills past mediapipe's inner-lip
contour (a tongue out over the lower lip, teeth the contour cuts off by a
pixel); :func:`paint_over_interior` paints it over (lip colour within the
lips, the skin around it beyond them) for the face surface, so a closed rest
never shows those colours as lips.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.create.procedural_rig import FaceFeatures, Opening

#: Inner-lip gap (mouth half widths) that lips part by without the jaw opening (a smile with teeth).
LIP_ONLY_GAP = 0.25
#: At most this much negative ``jawOpen``: the chin moves up with it and uncovers the photo's own chin
#: line on the layer behind (a seam) once it moves more than a few pixels.
MAX_JAW_CLOSE = 0.15
#: Lips overlap by this many pixels at rest (pressed, no seam).
SEAL_PX = 0.5
#: Mouth corners above the lip centre by more than this (mouth half widths) is a smile to undo ...
SMILE_CURVE = 0.12
#: ... when the lips are at most this far apart (mouth half widths; a wider opening confounds the measure) ...
SMILE_MAX_GAP = 0.5
#: ... down to this curvature.
RELAXED_CURVE = 0.04
#: At most this much negative smile (the rig's smile field also widens the mouth: undoing more narrows it).
MAX_UNSMILE = 0.5
#: Corner lift of the rig's ``mouthSmile*`` at 1 (mouth half widths, :mod:`engines.create.procedural_rig`).
SMILE_LIFT = 0.3
#: Eye openings (largest lid gap, eye half widths) above WIDE_EYE are relaxed to RELAXED_EYE.
WIDE_EYE = 0.8
RELAXED_EYE = 0.7
#: Below this inner-lip gap (mouth half widths) the photo's mouth counts as closed.
OPEN_GAP = 0.04


def _kmeans(x: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """k colour prototypes [k, 3] of samples x [N, 3] (initialised along luminance)."""
    if len(x) == 0:
        return np.zeros((0, 3))
    k = min(k, len(x))
    lum = x.mean(axis=1)
    centres = x[np.argsort(lum)[np.linspace(0, len(x) - 1, k).round().astype(int)]].copy()
    for _ in range(iters):
        lab = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        for j in range(k):
            if np.any(lab == j):
                centres[j] = x[lab == j].mean(axis=0)
    return centres


def mouth_interior_mask(photo: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """bool [H, W]: where the photo shows the inside of the mouth (teeth, tongue, cavity).

    Inside the inner-lip contour, and around the mouth every pixel whose colour is nearer to the
    interior's colours (3 prototypes from inside the contour) than to the lips' and the skin's (from the
    upper lip and a ring around the mouth), connected to the inside: a tongue out over the lower lip,
    teeth the contour cuts off. Empty when the mouth is closed.
    """
    from scipy.ndimage import binary_dilation, binary_erosion, label

    from engines.create.photo import LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER, _points_in_polygon

    img = np.asarray(photo, np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    h, w = img.shape[:2]
    lm2 = np.asarray(lm, np.float64)[:, :2]
    gy, gx = np.mgrid[0:h, 0:w]
    pts = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1)
    inner_poly = np.concatenate([lm2[list(LIPS_INNER_UPPER)], lm2[list(LIPS_INNER_LOWER)][::-1][1:-1]])
    inner = _points_in_polygon(pts, inner_poly).reshape(h, w)
    if inner.sum() < 4:
        return inner
    outer = _points_in_polygon(pts, lm2[list(LIPS_OUTER)]).reshape(h, w)
    mouth_w = float(np.linalg.norm(lm2[291] - lm2[61]))
    r = max(round(0.12 * mouth_w), 2)
    core = binary_erosion(inner, iterations=1)
    interior = _kmeans(img[core if core.sum() >= 4 else inner], 3)
    # the darkest interior colour (the cavity) looks like any shadow: it does not spread past the contour
    interior = interior[np.argsort(interior.mean(axis=1))][1:]
    mid_y = 0.5 * (lm2[13, 1] + lm2[14, 1])
    upper_lip = outer & ~binary_dilation(inner, iterations=2) & (gy + 0.5 < mid_y)
    near = binary_dilation(outer, iterations=2 * r)
    ring = binary_dilation(outer, iterations=4 * r) & ~near
    others = np.concatenate([_kmeans(img[upper_lip], 1), _kmeans(img[ring], 2)])
    d_in = ((img[near][:, None, :] - interior[None]) ** 2).sum(axis=2).min(axis=1)
    d_out = ((img[near][:, None, :] - others[None]) ** 2).sum(axis=2).min(axis=1)
    cand = np.zeros((h, w), bool)
    cand[near] = d_in < 0.5 * d_out  # clearly nearer the interior (squared distances: 0.7 in distance)
    labels, _ = label(cand | inner)
    keep = np.unique(labels[inner])
    return np.isin(labels, keep[keep > 0]) | inner


def paint_over_interior(photo: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(photo [H, W, 3] float in [0, 1] with the mouth interior painted over, the painted mask [H, W]).

    Within the outer-lip contour the interior becomes lip (the upper lip's colour, shaded by the
    painted-over surroundings), elsewhere (a tongue far out) it is in-painted from the skin around it.
    The face surface samples this picture, so a closed rest shows lips, never teeth or tongue.
    """
    from scipy.ndimage import binary_dilation

    from engines.create.photo import LIPS_INNER_UPPER, LIPS_OUTER, _inpaint, _points_in_polygon

    img = np.asarray(photo, np.float64)
    h, w = img.shape[:2]
    shown = binary_dilation(mouth_interior_mask(img, lm), iterations=2)
    if not shown.any():
        return img, shown
    lm2 = np.asarray(lm, np.float64)[:, :2]
    filled = _inpaint(img, shown)
    gy, gx = np.mgrid[0:h, 0:w]
    pts = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1)
    outer = _points_in_polygon(pts, lm2[list(LIPS_OUTER)]).reshape(h, w)
    upper_in = lm2[list(LIPS_INNER_UPPER)]
    upper_out = lm2[list(LIPS_OUTER[: LIPS_OUTER.index(291) + 1])]
    upper_lip = _points_in_polygon(pts, np.concatenate([upper_out, upper_in[::-1]])).reshape(h, w) & ~shown
    if upper_lip.sum() >= 4:
        lip = np.median(img[upper_lip], axis=0)
        sel = shown & outer
        shade = filled[sel].mean(axis=1, keepdims=True) / max(float(filled[sel].mean()), 1e-6)
        filled[sel] = np.clip(0.75 * lip * shade + 0.25 * filled[sel], 0.0, 1.0)
    return filled, shown


def mouth_curvature(lm: np.ndarray) -> float:
    """How far the inner lips' centre lies below the line through the mouth corners (mouth half widths):
    a smile lifts the corners. An open jaw lowers the centre too, so this reads a smile only while the
    lips are less than :data:`SMILE_MAX_GAP` apart."""
    lm2 = np.asarray(lm, np.float64)[:, :2]
    left, right = lm2[78], lm2[308]
    a = float(np.linalg.norm(right - left)) / 2
    ex = (right - left) / (2 * a)
    ey = np.array([-ex[1], ex[0]])
    return float(((lm2[13] + lm2[14]) / 2 - (left + right) / 2) @ ey / a)


def _max_gap(o: Opening) -> float:
    return float(np.max(o.gap(np.linspace(-1, 1, 41))))


def rest_expression(
    avatar: Any, feats: FaceFeatures, lm: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """(rest channel values, measures) for a rigged one-shot avatar, its rig features and photo landmarks."""
    from engines.splat.measure import lip_aperture_px

    measures: dict[str, float] = {}
    rest: dict[str, float] = {}
    chans = set(avatar.channels)

    def aperture(values: dict[str, float]) -> float:
        return float(
            lip_aperture_px(avatar, avatar.params({k: v for k, v in values.items() if k in chans}))[0]
        )

    gap = _max_gap(feats.mouth)
    measures["lip_gap"] = round(gap, 4)
    neutral_px = aperture({})
    measures["lip_gap_px"] = round(neutral_px, 2)
    if gap > OPEN_GAP or neutral_px > 0.0:
        # the jaw: close the part of the opening that lips alone would not make
        per_unit = aperture({"jawOpen": 1.0}) - neutral_px  # pixels the jaw opens the lips by at 1
        cam, m = avatar.camera, feats.mouth
        px_per_local = m.half_width * cam.fx / float(m.centre[2])  # pixels per mouth half width
        jaw_px = max(gap - LIP_ONLY_GAP, 0.0) * px_per_local
        if per_unit > 1e-3 and jaw_px > 0.0:
            rest["jawOpen"] = -float(min(jaw_px / per_unit, MAX_JAW_CLOSE))
        # then press the lips until they just meet (aperture is piecewise linear in the press)
        press = 1.0
        for _ in range(3):
            a0 = aperture({**rest, "mouthPressLeft": 0.0, "mouthPressRight": 0.0})
            a1 = aperture({**rest, "mouthPressLeft": press, "mouthPressRight": press})
            if a0 <= -SEAL_PX:
                press = 0.0
                break
            if a0 - a1 <= 1e-6:
                break
            press = float(np.clip(press * (a0 + SEAL_PX) / (a0 - a1), 0.0, 1.5))
        if press > 0.0:
            rest["mouthPressLeft"] = rest["mouthPressRight"] = round(press, 4)
    curve = mouth_curvature(lm)
    measures["mouth_curvature"] = round(curve, 4)
    if curve > SMILE_CURVE and gap <= SMILE_MAX_GAP:
        undo = min((curve - RELAXED_CURVE) / SMILE_LIFT, MAX_UNSMILE)
        rest["mouthSmileLeft"] = rest["mouthSmileRight"] = -round(undo, 4)
    for side, eye in (("Left", feats.eye_left), ("Right", feats.eye_right)):
        g = _max_gap(eye)
        measures[f"eye_gap_{side.lower()}"] = round(g, 4)
        if g > WIDE_EYE:
            rest[f"eyeBlink{side}"] = round((g - RELAXED_EYE) / g, 4)
    if "jawOpen" in rest:
        rest["jawOpen"] = round(rest["jawOpen"], 4)
    return {k: v for k, v in rest.items() if k in chans}, measures
