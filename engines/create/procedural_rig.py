"""A procedural face rig: ARKit channel deltas from a few facial features.

The rig is built from geometry alone (no training data): the mouth and the
two eyes are :class:`Opening` s (two inner curves meeting at two corners, in
a local frame), the brows are polylines. Every channel is a smooth vector
field over the deformable Gaussians, expressed in the local frame of the
feature it moves and in units of that feature's half width, then stored as
sparse per-channel position deltas (:class:`engines.splat.avatar.Rig`).

Closing channels are exact: ``mouthPressLeft = mouthPressRight = 1`` moves
the upper and lower inner lip onto their common midline (plus a small
overlap), so the lips close completely even where the photo shows teeth;
``eyeBlink*`` does the same for the lids. ``jawOpen`` rotates the inner-mouth
jaw layer rigidly and drags the lower lip and chin along the same rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engines.splat.avatar import LAYER_EYES, LAYER_JAW, Rig
from engines.splat.rig import axis_angle_matrix

Vec = np.ndarray  # [3] float


@dataclass
class Opening:
    """A mouth or an eye in a local frame: x along the corners, y down, z into the face."""

    centre: Vec  # [3] camera space
    ex: Vec  # [3] unit, from the image-left corner to the image-right corner
    ey: Vec  # [3] unit, down in the face plane
    ez: Vec  # [3] unit, into the face (away from the camera)
    half_width: float  # world units
    upper: np.ndarray  # [K, 2] (mx, my) of the upper inner curve, local units, sorted by mx
    lower: np.ndarray  # [K, 2] (mx, my) of the lower inner curve

    @staticmethod
    def from_points(left: Vec, right: Vec, upper: np.ndarray, lower: np.ndarray) -> Opening:
        """From the two corners (image left, image right) and the inner curves [K, 3] (camera space)."""
        left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
        centre = (left + right) / 2.0
        ex = right - left
        a = float(np.linalg.norm(ex)) / 2.0
        ex /= 2.0 * a
        ey = np.array([0.0, 1.0, 0.0]) - ex[1] * ex
        ey /= np.linalg.norm(ey)
        ez = np.cross(ex, ey)
        op = Opening(centre, ex, ey, ez, a, np.zeros((0, 2)), np.zeros((0, 2)))
        op.upper = op._curve(np.asarray(upper, np.float64))
        op.lower = op._curve(np.asarray(lower, np.float64))
        return op

    def _curve(self, pts: np.ndarray) -> np.ndarray:
        loc = self.local(pts)[:, :2]
        loc = loc[np.argsort(loc[:, 0])]
        return np.concatenate([[[-1.0, 0.0]], loc, [[1.0, 0.0]]])  # corners pinned

    def local(self, p: np.ndarray) -> np.ndarray:
        """[N, 3] camera space → [N, 3] (mx, my, mz) in units of the half width."""
        d = (np.asarray(p, np.float64) - self.centre) / self.half_width
        return np.stack([d @ self.ex, d @ self.ey, d @ self.ez], axis=1)

    def to_world(self, d: np.ndarray) -> np.ndarray:
        """[N, 3] local displacement (units of the half width) → [N, 3] camera-space displacement."""
        basis = np.stack([self.ex, self.ey, self.ez])  # [3, 3]
        return (d @ basis) * self.half_width

    def up(self, mx: np.ndarray) -> np.ndarray:
        return np.interp(mx, self.upper[:, 0], self.upper[:, 1])

    def lo(self, mx: np.ndarray) -> np.ndarray:
        return np.interp(mx, self.lower[:, 0], self.lower[:, 1])

    def gap(self, mx: np.ndarray) -> np.ndarray:
        """Neutral opening height (local units) at ``mx``; 0 past the corners."""
        return np.maximum(self.lo(mx) - self.up(mx), 0.0)


@dataclass
class FaceFeatures:
    mouth: Opening
    eye_left: Opening  # the subject's left eye (image right)
    eye_right: Opening  # the subject's right eye (image left)
    brow_left: np.ndarray  # [K, 3] from inner to outer end
    brow_right: np.ndarray  # [K, 3] from inner to outer end
    nose_tip: Vec  # [3]
    head_pivot: Vec  # [3]
    jaw_pivot: Vec  # [3]
    jaw_max_angle: float = 0.5  # radians at jawOpen = 1


def _band(d: np.ndarray, t: float, s: float) -> np.ndarray:
    """1 within ``t`` of a curve (d ≥ 0 side), Gaussian falloff of width ``s`` beyond."""
    d = np.maximum(d, 0.0)
    return np.where(d <= t, 1.0, np.exp(-(((d - t) / s) ** 2)))


def _lateral(mx: np.ndarray, inner: float = 1.0, width: float = 0.3) -> np.ndarray:
    ax = np.abs(mx)
    return np.where(ax <= inner, 1.0, np.exp(-(((ax - inner) / width) ** 2)))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blob(loc: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.exp(
        -(((loc[:, 0] - cx) / rx) ** 2) - ((loc[:, 1] - cy) / ry) ** 2 - (loc[:, 2] / (2 * ry)) ** 2
    )


class _Fields:
    """Per-channel displacement fields over a set of Gaussians."""

    def __init__(self, feats: FaceFeatures, points: np.ndarray) -> None:
        self.f = feats
        self.p = points  # [K, 3]
        self.fields: dict[str, np.ndarray] = {}

    def add(self, name: str, delta: np.ndarray) -> None:
        self.fields[name] = self.fields.get(name, 0.0) + delta


LIP_T = 0.32  # lip thickness band (mouth half widths)
LIP_S = 0.45  # falloff beyond the lip band
OVERLAP = 0.03  # closing channels overshoot the midline by this much (each side), for a complete seal


def _mouth_fields(fx: _Fields, jaw_delta: np.ndarray) -> None:
    m = fx.f.mouth
    loc = m.local(fx.p)
    mx, my = loc[:, 0], loc[:, 1]
    up, lo = m.up(mx), m.lo(mx)
    mid = 0.5 * (up + lo)
    lower = my > mid
    gap = m.gap(mx)
    lat = _lateral(mx, 1.0, 0.25)
    band_u = np.where(lower, 0.0, _band(up - my, LIP_T, LIP_S)) * lat
    band_l = np.where(lower, _band(my - lo, LIP_T, LIP_S), 0.0) * lat
    lips = band_u + band_l
    zero = np.zeros_like(mx)

    def vec(dx: np.ndarray | float, dy: np.ndarray | float, dz: np.ndarray | float) -> np.ndarray:
        d = np.stack(np.broadcast_arrays(np.asarray(dx, float) + zero, np.asarray(dy, float) + zero,
                                         np.asarray(dz, float) + zero), axis=1)  # fmt: skip
        return m.to_world(d)

    close = vec(0.0, band_u * (gap / 2 + OVERLAP * lat) - band_l * (gap / 2 + OVERLAP * lat), 0.0)
    side_l = np.clip(0.5 + mx, 0.0, 1.0)  # subject's left = image right (+x)
    side_r = 1.0 - side_l
    fx.add("mouthPressLeft", close * side_l[:, None])
    fx.add("mouthPressRight", close * side_r[:, None])

    # jaw: lower lip and chin follow the rigid jaw rotation
    ramp = 0.05 + 0.6 * np.clip(np.abs(mx) - 0.8, 0.0, 2.0)
    # near the lips the opening tapers to the corners (an oval, not a box); the chin moves fully
    inside = np.clip(1.0 - mx * mx, 0.0, 1.0)  # 1 at the middle, 0 at and past the corners
    taper = 0.05 + 0.95 * np.sqrt(inside)  # an oval opening
    t_chin = _smoothstep((my - lo) / 2.0)
    w_jaw = np.where(lower, _smoothstep((my - mid) / ramp), 0.0) * _lateral(mx, 1.2, 0.9)
    w_jaw *= (1.0 - t_chin) * taper + t_chin
    fx.add("jawOpen", jaw_delta * w_jaw[:, None] + vec(0.0, -0.1 * band_u * taper, 0.0))
    # mouthClose undoes the jaw on the lower lip (ARKit: lips closed over an open jaw)
    fx.add("mouthClose", -jaw_delta * (w_jaw * band_l)[:, None])

    bulge = 0.22 * np.clip(1.0 - mx * mx, 0.0, 1.0)  # no slit past the corners
    # horizontal lip motions fade out slowly past the corners so that the skin stretches smoothly
    wide = (np.where(lower, _band(my - lo, LIP_T, 0.9), _band(up - my, LIP_T, 0.9))) * _lateral(mx, 0.9, 0.8)
    squeeze = -np.clip(mx, -1.0, 1.0) * wide
    fx.add("mouthFunnel", vec(0.22 * squeeze, -bulge * band_u + bulge * band_l, -0.15 * lips))
    fx.add("mouthPucker", vec(0.35 * squeeze, 0.0, -0.25 * lips) + 0.7 * close)
    region = _band(np.abs(my) - 0.3, 0.5, 0.6) * _lateral(mx, 1.1, 0.5)
    fx.add("mouthLeft", vec(0.25 * region, 0.0, 0.0))
    fx.add("mouthRight", vec(-0.25 * region, 0.0, 0.0))
    for side, sgn in (("Left", 1.0), ("Right", -1.0)):
        corner = np.exp(-(((mx - sgn) / 0.75) ** 2) - (my / 0.6) ** 2)
        fx.add(f"mouthSmile{side}", vec(sgn * 0.2 * corner, -0.3 * corner, 0.04 * corner))
        fx.add(f"mouthFrown{side}", vec(sgn * 0.03 * corner, 0.2 * corner, 0.0))
        fx.add(f"mouthStretch{side}", vec(sgn * 0.22 * corner, 0.05 * corner, 0.0))
        fx.add(f"mouthDimple{side}", vec(sgn * 0.08 * corner, 0.0, 0.06 * corner))
        half = side_l if sgn > 0 else side_r
        fx.add(f"mouthLowerDown{side}", vec(0.0, 0.28 * band_l * half * np.sqrt(inside), 0.0))
        fx.add(f"mouthUpperUp{side}", vec(0.0, -0.22 * band_u * half * np.sqrt(inside), 0.0))
        cheek = _blob(loc, sgn * 1.7, -0.5, 0.7, 0.7)
        fx.add("cheekPuff", vec(sgn * 0.16 * cheek, 0.0, -0.12 * cheek))
        fx.add(f"cheekSquint{side}", vec(0.0, -0.14 * _blob(loc, sgn * 1.5, -1.3, 0.6, 0.5), 0.0))
        sneer = _blob(loc, sgn * 0.45, -1.5, 0.35, 0.35)
        fx.add(f"noseSneer{side}", vec(0.0, -0.1 * sneer, 0.0))
    fx.add("mouthRollLower", vec(0.0, -0.5 * LIP_T * band_l - 0.1 * band_l, 0.08 * band_l))
    fx.add("mouthRollUpper", vec(0.0, 0.5 * LIP_T * band_u + 0.1 * band_u, 0.08 * band_u))
    chin = np.where(lower, _band(my - lo, 1.2, 0.6), 0.0) * _lateral(mx, 1.0, 0.5)
    fx.add("mouthShrugLower", vec(0.0, -0.14 * chin, -0.05 * chin))
    fx.add("mouthShrugUpper", vec(0.0, -0.08 * band_u, -0.03 * band_u))
    fx.add("jawForward", vec(0.0, 0.0, -0.12 * w_jaw))
    fx.add("jawLeft", vec(0.15 * w_jaw, 0.0, 0.0))
    fx.add("jawRight", vec(-0.15 * w_jaw, 0.0, 0.0))


def _eye_fields(fx: _Fields, eye: Opening, side: str) -> None:
    loc = eye.local(fx.p)
    mx, my = loc[:, 0], loc[:, 1]
    up, lo = eye.up(mx), eye.lo(mx)
    lower = my > 0.5 * (up + lo)
    gap = eye.gap(mx)
    lat = _lateral(mx, 1.0, 0.25) * np.exp(-((loc[:, 2] / 1.5) ** 2))
    band_u = np.where(lower, 0.0, _band(up - my, 0.45, 0.5)) * lat
    band_l = np.where(lower, _band(my - lo, 0.15, 0.3), 0.0) * lat
    zero = np.zeros_like(mx)

    def vec(dy: np.ndarray) -> np.ndarray:
        return eye.to_world(np.stack([zero, dy, zero], axis=1))

    fx.add(
        f"eyeBlink{side}", vec(band_u * (0.8 * gap + OVERLAP * lat) - band_l * (0.2 * gap + OVERLAP * lat))
    )
    gmax = float(np.max(eye.gap(np.linspace(-1, 1, 41))))
    fx.add(f"eyeWide{side}", vec(-0.3 * gmax * band_u))
    fx.add(f"eyeSquint{side}", vec(-0.3 * gmax * band_l - 0.1 * gmax * band_u))


def _brow_fields(fx: _Fields, brow: np.ndarray, eye: Opening, side: str) -> None:
    a = eye.half_width
    d = np.linalg.norm(fx.p[:, None, :2] - brow[None, :, :2], axis=2)  # [K, B]
    nearest = np.argmin(d, axis=1)
    w = np.exp(-((d.min(axis=1) / (0.7 * a)) ** 2))
    # stay clear of the lids: no brow motion below the upper lid line
    loc = eye.local(fx.p)
    w *= _smoothstep((eye.up(loc[:, 0]) - loc[:, 1] - 0.3) / 0.6)
    t = nearest / max(len(brow) - 1, 1)  # 0 at the inner end, 1 at the outer end
    ey = eye.ey * a
    fx.add(f"browDown{side}", w[:, None] * (0.22 * ey - 0.05 * np.sign(eye.ex[0]) * (eye.ex * a)))
    fx.add("browInnerUp", (w * (1.0 - t) ** 1.5)[:, None] * (-0.3 * ey))
    fx.add(f"browOuterUp{side}", (w * t**1.5)[:, None] * (-0.3 * ey))


def _eye_layer_fields(fx: _Fields, eye: Opening, side: str, inward: float) -> None:
    """Gaze: shift this eye's eyeball Gaussians (``inward`` = +1 if the nose is towards +x)."""
    a = eye.half_width
    n = len(fx.p)
    ex = np.broadcast_to(eye.ex * a, (n, 3))
    ey = np.broadcast_to(eye.ey * a, (n, 3))
    fx.add(f"eyeLookIn{side}", 0.28 * inward * ex)
    fx.add(f"eyeLookOut{side}", -0.28 * inward * ex)
    fx.add(f"eyeLookUp{side}", -0.2 * ey)
    fx.add(f"eyeLookDown{side}", 0.2 * ey)
    fx.add("eyeGazeX", 0.28 * ex)
    fx.add("eyeGazeY", 0.2 * ey)


def build_rig(
    means: np.ndarray,  # [N, 3] float32, neutral
    layers: np.ndarray,  # [N] int8
    deformable: np.ndarray,  # [N] bool: face-surface Gaussians that carry blendshape deltas
    feats: FaceFeatures,
    channels: Sequence[str],
    tongue: np.ndarray | None = None,  # [N] bool: tongue Gaussians (tongueOut)
    progress: Callable[[str], None] | None = None,
) -> Rig:
    """Procedural rig over ``channels``; channels it does not know get no deltas."""
    channels = tuple(channels)
    c = len(channels)
    col = {name: i for i, name in enumerate(channels)}
    per_channel: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(c)]
    threshold = 1e-3 * feats.mouth.half_width

    def collect(idx: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        for name, delta in fields.items():
            if name not in col:
                continue
            delta = np.asarray(delta, np.float64)
            keep = np.linalg.norm(delta, axis=1) > threshold
            if np.any(keep):
                per_channel[col[name]].append((idx[keep], delta[keep]))

    jaw_axis = feats.mouth.ex.astype(np.float64)
    rot = axis_angle_matrix(jaw_axis, np.array([feats.jaw_max_angle]))[0].astype(np.float64)

    face_idx = np.flatnonzero(deformable)
    pts = means[face_idx].astype(np.float64)
    fx = _Fields(feats, pts)
    jaw_delta = (pts - feats.jaw_pivot) @ rot.T + feats.jaw_pivot - pts
    _mouth_fields(fx, jaw_delta)
    if progress:
        progress("mouth")
    _eye_fields(fx, feats.eye_left, "Left")
    _eye_fields(fx, feats.eye_right, "Right")
    _brow_fields(fx, feats.brow_left, feats.eye_left, "Left")
    _brow_fields(fx, feats.brow_right, feats.eye_right, "Right")
    collect(face_idx, fx.fields)
    if progress:
        progress("eyes and brows")

    eyes = np.flatnonzero(layers == LAYER_EYES)
    if eyes.size:
        ep = means[eyes].astype(np.float64)
        dl = np.linalg.norm(ep - feats.eye_left.centre, axis=1)
        dr = np.linalg.norm(ep - feats.eye_right.centre, axis=1)
        nose_x = float(feats.nose_tip[0])
        for eye, side, sel in ((feats.eye_left, "Left", dl <= dr), (feats.eye_right, "Right", dl > dr)):
            if not np.any(sel):
                continue
            inward = 1.0 if nose_x > float(eye.centre[0]) else -1.0
            ef = _Fields(feats, ep[sel])
            _eye_layer_fields(ef, eye, side, inward)
            collect(eyes[sel], ef.fields)
    if tongue is not None and np.any(tongue):
        t_idx = np.flatnonzero(tongue)
        a = feats.mouth.half_width
        d = np.broadcast_to(-0.45 * a * feats.mouth.ez + 0.12 * a * feats.mouth.ey, (t_idx.size, 3))
        collect(t_idx, {"tongueOut": d})

    offsets = np.zeros(c + 1, dtype=np.int64)
    idx_parts: list[np.ndarray] = []
    delta_parts: list[np.ndarray] = []
    for ci in range(c):
        if per_channel[ci]:
            idx = np.concatenate([p[0] for p in per_channel[ci]])
            dl_ = np.concatenate([p[1] for p in per_channel[ci]])
            # merge duplicates (a Gaussian reached by two fields of the same channel)
            uniq, inv = np.unique(idx, return_inverse=True)
            merged = np.zeros((uniq.size, 3))
            np.add.at(merged, inv, dl_)
            idx_parts.append(uniq.astype(np.int32))
            delta_parts.append(merged.astype(np.float32))
            offsets[ci + 1] = offsets[ci] + uniq.size
        else:
            offsets[ci + 1] = offsets[ci]
    jaw_angle = np.zeros(c, dtype=np.float32)
    jaw_translation = np.zeros((c, 3), dtype=np.float32)
    a = feats.mouth.half_width
    if "jawOpen" in col:
        jaw_angle[col["jawOpen"]] = feats.jaw_max_angle
    for name, vec in (
        ("jawForward", -0.12 * a * feats.mouth.ez),
        ("jawLeft", 0.15 * a * feats.mouth.ex),
        ("jawRight", -0.15 * a * feats.mouth.ex),
    ):
        if name in col:
            jaw_translation[col[name]] = vec
    _ = LAYER_JAW  # the jaw layer is moved rigidly by pose(); no deltas needed for jawOpen
    return Rig(
        delta_offsets=offsets,
        delta_index=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
        delta_means=np.concatenate(delta_parts) if delta_parts else np.zeros((0, 3), np.float32),
        head_pivot=np.asarray(feats.head_pivot, np.float32),
        jaw_pivot=np.asarray(feats.jaw_pivot, np.float32),
        jaw_axis=(jaw_axis / np.linalg.norm(jaw_axis)).astype(np.float32),
        jaw_angle=jaw_angle,
        jaw_translation=jaw_translation,
    )
