"""One-shot avatar from a frontal portrait.

Pipeline (:func:`create_from_photo`):

1. face landmarks: mediapipe face mesh (478 refined 3D points) in its own
   environment (:mod:`engines.create.face_env`); no face or several faces is
   an error (:class:`NoFaceError`, :class:`SeveralFacesError`);
2. a head-and-shoulders square crop around the face, resampled to
   ``size`` × ``size`` (the avatar camera's image; "the source photo crop");
3. the landmarks lifted to 3D with a pinhole camera (face ≈ 14 cm wide), a
   triangulated face surface (openings at the eyes and the mouth);
4. small flat Gaussians on that surface, one per ``face_step`` pixels,
   coloured from the photo; an inner-mouth layer (dark cavity, upper teeth,
   lower teeth and tongue on the rigid jaw) and eyeballs behind the openings,
   coloured from the photo where the photo shows them;
5. hair/ears (moving with the head) and neck, shoulders and background
   (static, with the head region in-painted behind it) as 2.5D layers;
6. the procedural rig (:mod:`engines.create.procedural_rig`);
7. a few rounds of colour refinement against the photo with the splat
   rasteriser (rendering is linear in the colours), so that the neutral
   render reproduces the crop.

The default avatar is this pipeline applied to ``skimage.data.astronaut()``::

    splatcast avatar create --astronaut -o engines/data/default_avatar.safetensors
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.create.face_env import Landmarks, detect_landmarks
from engines.create.layers import (
    CAVITY_BOTTOM,
    FLAG_DEFORM,
    Part,
    eyeball,
    face_metadata,
    inner_mouth,
    to_avatar,
)
from engines.create.procedural_rig import FaceFeatures, Opening
from engines.create.relax import OPEN_GAP, paint_over_interior, rest_expression
from engines.splat.avatar import (
    LAYER_EYES,
    LAYER_HEAD,
    LAYER_JAW,
    LAYER_MOUTH,
    LAYER_STATIC,
    Avatar,
    sort_by_layer,
)
from engines.splat.types import Camera

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class PhotoAvatarError(ValueError):
    """The photo cannot be turned into an avatar; the message says why and what to do."""


class NoFaceError(PhotoAvatarError):
    pass


class SeveralFacesError(PhotoAvatarError):
    pass


# ------------------------------------------------------------------ mediapipe face-mesh landmark indices
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
# eyes in the image: "right" = the subject's right eye, on the image's left
EYE_R_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_R_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_L_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
EYE_L_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
BROW_R = (107, 66, 105, 63, 70)  # inner → outer
BROW_L = (336, 296, 334, 293, 300)
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
CHEEK_R, CHEEK_L = 234, 454
N_MESH = 468  # 468..477 are the iris points

#: Within this many grid steps of the face's outline the surface's depth is smoothed (over FACE_RIM_SMOOTH
#: steps, σ: the rim's fins have the landmarks' spacing) and its discs follow that smooth surface; inside
#: that band the surface is the mesh's, as before (eyes, nose and mouth keep their exact shapes).
FACE_RIM_SMOOTH = 5.0
FACE_RIM_STEPS = 12.0
#: A face-surface disc is at most 1 / MIN_DISC_COS times longer along the slope than across it.
MIN_DISC_COS = 0.25
#: Rim discs are this much wider than the grid spacing asks (σ): a turned head sees some of them obliquely
#: across the slope too, and at 1.0 a pinhole (α 0.985) opened at the jaw of the astronaut at yaw -15°.
RIM_DISC_WIDEN = 1.15
FACE_WIDTH_M = 0.14  # cheek-to-cheek (landmarks 234-454) of an adult, metres
LICENCE_ASTRONAUT = "public domain (NASA photograph, via scikit-image's data module)"


@dataclass
class PhotoOptions:
    size: int = 512  # avatar camera image side
    crop_scale: float = 2.7  # crop side / face width
    face_step: float = 1.6  # pixels between face Gaussians
    head_step: float = 3.0  # hair / ears / head backing
    static_step: float = 4.5  # neck, shoulders, background
    focal: float = 2.5  # focal length / image side
    refine_iters: int = 16
    max_faces: int = 4
    min_face_ratio: float = 0.35  # a second face at least this wide (relative) counts as "several faces"


# ------------------------------------------------------------------ small image helpers


def _points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: [K, 2] points inside the closed polygon [M, 2] → [K] bool."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.count_nonzero(cond & (x < xint), axis=1) % 2 == 1


def _mask(poly: np.ndarray, size: int) -> np.ndarray:
    gy, gx = np.mgrid[0:size, 0:size]
    pts = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1)
    return _points_in_polygon(pts, poly).reshape(size, size)


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample img [H, W, C] float at pixel coordinates uv [K, 2] (pixel centres at +0.5)."""
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


def _inpaint(img: np.ndarray, hole: np.ndarray, iters: int = 6) -> np.ndarray:
    """Fill ``hole`` [H, W] bool from its surroundings by normalised blur at growing radii."""
    from scipy.ndimage import gaussian_filter

    out = img.copy()
    known = (~hole).astype(np.float64)
    for k in range(iters):
        sigma = 2.0 * 2**k
        num = np.stack([gaussian_filter(img[..., c] * known, sigma) for c in range(3)], axis=-1)
        den = gaussian_filter(known, sigma)[..., None]
        fill = num / np.maximum(den, 1e-6)
        todo = hole & (den[..., 0] > 1e-3) & (known == 0)
        out[todo] = fill[todo]
        known = np.where(todo, 1.0, known)
        img = out
    return out


def load_image(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB from an image file."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - pillow ships with scikit-image/matplotlib
        raise PhotoAvatarError("reading photos needs Pillow: pip install pillow") from exc
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise PhotoAvatarError(f"cannot read image {path}: {exc}") from exc


def astronaut_image() -> np.ndarray:
    """``skimage.data.astronaut()`` (public-domain NASA portrait), uint8 [512, 512, 3]."""
    try:
        from skimage import data
    except ImportError as exc:
        raise PhotoAvatarError(
            "--astronaut needs scikit-image (pip install 'splatcast[create]' or pip install scikit-image)"
        ) from exc
    return np.asarray(data.astronaut(), dtype=np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _smooth_masked(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2D field over its finite entries only (NaN elsewhere, kept NaN)."""
    from scipy.ndimage import gaussian_filter

    known = np.isfinite(values)
    num = gaussian_filter(np.where(known, values, 0.0), sigma, mode="nearest")
    den = gaussian_filter(known.astype(np.float64), sigma, mode="nearest")
    return np.where(known, num / np.maximum(den, 1e-12), np.nan)


def _smooth_rim(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depth, rim weight) [Y, X]: the face's depth (NaN outside) smoothed over :data:`FACE_RIM_SMOOTH`
    grid steps at its outline, fading to the unsmoothed depth :data:`FACE_RIM_STEPS` steps inside
    (weight 1 at the outline, 0 from there on)."""
    from scipy.ndimage import binary_fill_holes, distance_transform_edt

    inside = binary_fill_holes(np.isfinite(depth))  # the eye and mouth holes are not the outline
    w = np.clip(1.0 - distance_transform_edt(inside) / FACE_RIM_STEPS, 0.0, 1.0)
    return np.asarray(w * _smooth_masked(depth, FACE_RIM_SMOOTH) + (1.0 - w) * depth), w


def _grid_normals(pts: np.ndarray) -> np.ndarray:
    """Unit normals [Y, X, 3] facing the camera (−z) of a surface sampled on a grid, pts [Y, X, 3]
    (NaN outside it: one-sided differences at its edges)."""

    def diff(axis: int) -> np.ndarray:
        fwd = np.roll(pts, -1, axis=axis) - pts
        bwd = pts - np.roll(pts, 1, axis=axis)
        d = np.where(np.isfinite(fwd), fwd, bwd)
        d = np.where(np.isfinite(bwd) & np.isfinite(fwd), 0.5 * (fwd + bwd), d)
        return np.nan_to_num(d)

    n = np.cross(diff(1), diff(0))
    n *= np.where(n[..., 2:3] > 0, -1.0, 1.0)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 1e-12, n / np.maximum(length, 1e-12), np.array([0.0, 0.0, -1.0]))


# ------------------------------------------------------------------ landmarks and crop


def find_face(image: np.ndarray, opts: PhotoOptions, notify: Progress | None = None) -> np.ndarray:
    """Landmarks [478, 3] (x_px, y_px, z_px) of the single face in ``image``."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="splatcast-photo-") as tmp:
        path = Path(tmp) / "photo.png"
        Image.fromarray(image).save(path)
        lm: Landmarks = detect_landmarks(path, max_faces=opts.max_faces, notify=notify)
    if not lm.faces:
        raise NoFaceError("no face found in the photo; use a well-lit frontal portrait with one face")
    widths = [float(np.ptp(f[:N_MESH, 0])) for f in lm.faces]
    big = max(widths)
    faces = [f for f, w in zip(lm.faces, widths, strict=True) if w >= opts.min_face_ratio * big]
    if len(faces) > 1:
        raise SeveralFacesError(
            f"{len(faces)} faces found in the photo; crop it to the one person the avatar should show"
        )
    return faces[0]


def crop_box(
    landmarks: np.ndarray, image_shape: tuple[int, ...], opts: PhotoOptions
) -> tuple[float, float, float]:
    """(x0, y0, side) of the head-and-shoulders square crop in source pixels."""
    face_w = float(np.linalg.norm(landmarks[CHEEK_L, :2] - landmarks[CHEEK_R, :2]))
    side = opts.crop_scale * face_w
    cx = 0.5 * (landmarks[CHEEK_L, 0] + landmarks[CHEEK_R, 0])
    top, chin = landmarks[FOREHEAD, 1], landmarks[CHIN, 1]
    cy = 0.5 * (top + chin)  # the face centre sits at 42 % of the crop's height
    return float(cx - side / 2), float(cy - 0.42 * side), float(side)


def crop_photo(image: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """The square crop resampled to ``size``²; outside the photo the border is replicated."""
    x0, y0, side = box
    h, w = image.shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    from PIL import Image

    im = Image.fromarray(padded)
    left, top = x0 + pad, y0 + pad
    out = im.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def crop_inside(box: tuple[float, float, float], image_shape: tuple[int, ...], size: int) -> np.ndarray:
    """[size, size] bool: the pixels of :func:`crop_photo`'s crop that come from inside the picture."""
    x0, y0, side = (float(v) for v in box)
    h, w = image_shape[:2]
    g = (np.arange(size) + 0.5) / size
    xs, ys = x0 + g * side, y0 + g * side
    return np.asarray(((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :])


#: Outside the picture, :func:`soften_outside` blurs by σ = this × the distance to the picture ...
SOFTEN_PER_PX = 0.5
#: ... up to this σ (pixels at the crop's size).
SOFTEN_MAX = 32.0


def soften_outside(crop: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The crop [S, S, 3] with what lies outside the picture (``inside`` [S, S] False: the repeated edge,
    stripes) blurred more the farther it lies from the picture, so the picture's colours fade out
    smoothly there (a shirt or a background continues, without the stripes)."""
    if inside.all() or not inside.any():
        return crop
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    x = np.asarray(crop, np.float32)
    sigma = np.clip(SOFTEN_PER_PX * distance_transform_edt(~inside), 0.0, SOFTEN_MAX)
    sigmas = [0.0] + [2.0**k for k in range(int(np.log2(SOFTEN_MAX)) + 1)]  # 0, 1, 2, 4, ... SOFTEN_MAX
    levels = [x] + [gaussian_filter(x, (s, s, 0), mode="nearest") for s in sigmas[1:]]
    # piecewise-linear in log σ between the two nearest levels
    pos = np.where(sigma < 1.0, sigma, 1.0 + np.log2(np.maximum(sigma, 1.0)))
    lo = np.clip(np.floor(pos).astype(int), 0, len(levels) - 2)
    t = (pos - lo)[..., None]
    out = np.zeros_like(x)
    for k in range(len(levels) - 1):
        sel = lo == k
        if sel.any():
            out[sel] = ((1.0 - t) * levels[k] + t * levels[k + 1])[sel]
    out = np.where(inside[..., None], x, out)
    return (
        np.clip(np.rint(out), 0, 255).astype(np.uint8) if crop.dtype == np.uint8 else out.astype(crop.dtype)
    )


# ------------------------------------------------------------------ face geometry

#: The rig needs the inner lips apart to tell the upper lip from the lower one: a closed mouth's
#: inner-lip landmarks are moved apart to at least this gap (pixels at the avatar's size).
MIN_LIP_GAP_PX = 1.5


def separate_lips(lm: np.ndarray, min_gap: float = MIN_LIP_GAP_PX) -> np.ndarray:
    """Landmarks [478, 3] whose inner lips are at least ``min_gap`` pixels apart (each lip moved half)."""
    out = np.array(lm, dtype=np.float64, copy=True)
    up, lo = list(LIPS_INNER_UPPER[1:-1]), list(LIPS_INNER_LOWER[1:-1])
    gap = out[lo, 1] - out[up, 1]  # [9] pixels, pairs sorted from one corner to the other
    push = np.maximum(min_gap - gap, 0.0) / 2.0
    out[up, 1] -= push
    out[lo, 1] += push
    return out


@dataclass
class FaceGeometry:
    """The source landmarks lifted into the avatar's camera space, and the rig's facial features."""

    camera: Camera
    lm: np.ndarray  # [478, 3] crop pixels (x, y, z_px)
    depth: np.ndarray  # [478] metres
    pts3: np.ndarray  # [478, 3] camera space
    z0: float  # depth of the nose tip
    face_w: float  # cheek-to-cheek width, metres
    feats: FaceFeatures

    def unproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        c = self.camera
        return np.stack([(u - c.cx) * z / c.fx, (v - c.cy) * z / c.fy, z], axis=-1)

    def project(self, p: np.ndarray) -> np.ndarray:
        c = self.camera
        return np.stack([c.fx * p[:, 0] / p[:, 2] + c.cx, c.fy * p[:, 1] / p[:, 2] + c.cy], axis=1)


def face_geometry(lm: np.ndarray, camera: Camera) -> FaceGeometry:
    """Lift crop-pixel landmarks [478, 3] to 3D (face ≈ 14 cm wide, pinhole ``camera``) and find the
    rig's features (mouth and eye openings, brows, head and jaw pivots)."""
    lm = np.asarray(lm, dtype=np.float64)
    f = float(camera.fx)
    face_w_px = float(np.linalg.norm(lm[CHEEK_L, :2] - lm[CHEEK_R, :2]))
    z0 = f * FACE_WIDTH_M / face_w_px  # depth of the face so that it is FACE_WIDTH_M wide
    depth = z0 + (lm[:, 2] - lm[NOSE_TIP, 2]) * z0 / f  # nose tip at z0
    pts3 = np.stack(
        [(lm[:, 0] - camera.cx) * depth / f, (lm[:, 1] - camera.cy) * depth / camera.fy, depth], axis=-1
    )

    def opening(left: int, right: int, upper: tuple[int, ...], lower: tuple[int, ...]) -> Opening:
        return Opening.from_points(pts3[left], pts3[right], pts3[list(upper[1:-1])], pts3[list(lower[1:-1])])

    mouth = opening(78, 308, LIPS_INNER_UPPER, LIPS_INNER_LOWER)
    eye_r = opening(33, 133, EYE_R_UPPER, EYE_R_LOWER)
    eye_l = opening(362, 263, EYE_L_UPPER, EYE_L_LOWER)
    face_w = float(np.linalg.norm(pts3[CHEEK_L] - pts3[CHEEK_R]))
    chin = pts3[CHIN]
    feats = FaceFeatures(
        mouth=mouth,
        eye_left=eye_l,
        eye_right=eye_r,
        brow_left=pts3[list(BROW_L)],
        brow_right=pts3[list(BROW_R)],
        nose_tip=pts3[NOSE_TIP],
        head_pivot=np.array([mouth.centre[0], chin[1], z0 + 0.6 * face_w]),
        jaw_pivot=mouth.centre - 0.25 * face_w * mouth.ey + 0.55 * face_w * mouth.ez,
    )
    return FaceGeometry(camera, lm, depth, pts3, z0, face_w, feats)


# ------------------------------------------------------------------ the pipeline


def _poly(lm2d: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    return lm2d[list(idx)]


def create_from_image(
    image: np.ndarray,
    opts: PhotoOptions | None = None,
    provenance: dict[str, Any] | None = None,
    progress: Progress | None = None,
    landmarks: np.ndarray | None = None,
) -> Avatar:
    """Build an avatar from an RGB uint8 image [H, W, 3] (see the module docstring)."""
    from scipy.spatial import Delaunay

    opts = opts or PhotoOptions()
    step = progress or (lambda msg: logger.info("photo: %s", msg))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PhotoAvatarError(f"expected an RGB uint8 image [H, W, 3], got {image.shape} {image.dtype}")
    t0 = time.monotonic()
    src_lm = find_face(image, opts, notify=step) if landmarks is None else np.asarray(landmarks, np.float64)
    step("face landmarks")

    size = opts.size
    box = crop_box(src_lm, image.shape, opts)
    # outside the picture the crop repeats its edge; softened, so it shows no stripes (a big face in a
    # landscape clip: the head-and-shoulders crop runs past the bottom)
    crop = soften_outside(crop_photo(image, box, size), crop_inside(box, image.shape, size))
    scale = size / box[2]
    lm = src_lm.copy()
    lm[:, 0] = (src_lm[:, 0] - box[0]) * scale
    lm[:, 1] = (src_lm[:, 1] - box[1]) * scale
    lm[:, 2] = src_lm[:, 2] * scale
    lm = separate_lips(lm)
    photo = crop.astype(np.float64) / 255.0
    step("crop")

    f = opts.focal * size
    camera = Camera(fx=f, fy=f, cx=size / 2, cy=size / 2, width=size, height=size)
    face_w_px = float(np.linalg.norm(lm[CHEEK_L, :2] - lm[CHEEK_R, :2]))
    geo = face_geometry(lm, camera)
    z0, depth, pts3 = geo.z0, geo.depth, geo.pts3  # [478] metres, [478, 3] camera space
    unproject, project = geo.unproject, geo.project
    lm2 = lm[:, :2]

    # --- triangulated face surface with openings at the eyes and the mouth
    mesh2 = lm2[:N_MESH]
    tri = Delaunay(mesh2)
    cent = mesh2[tri.simplices].mean(axis=1)
    oval = _poly(lm2, FACE_OVAL)
    mouth_poly = np.concatenate([_poly(lm2, LIPS_INNER_UPPER), _poly(lm2, LIPS_INNER_LOWER)[::-1][1:-1]])
    eye_r_poly = np.concatenate([_poly(lm2, EYE_R_UPPER), _poly(lm2, EYE_R_LOWER)[::-1][1:-1]])
    eye_l_poly = np.concatenate([_poly(lm2, EYE_L_UPPER), _poly(lm2, EYE_L_LOWER)[::-1][1:-1]])
    keep_tri = _points_in_polygon(cent, oval)
    for hole in (mouth_poly, eye_r_poly, eye_l_poly):
        keep_tri &= ~_points_in_polygon(cent, hole)
    # vertex normals (area-weighted) of the kept triangles
    simp = tri.simplices[keep_tri]
    p3 = pts3[:N_MESH]
    fn = np.cross(p3[simp[:, 1]] - p3[simp[:, 0]], p3[simp[:, 2]] - p3[simp[:, 0]])
    fn *= np.sign(-fn[:, 2:3] + 1e-12)  # face the camera
    vn = np.zeros_like(p3)
    for k in range(3):
        np.add.at(vn, simp[:, k], fn)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
    vn[np.linalg.norm(vn, axis=1) < 0.5] = (0.0, 0.0, -1.0)  # a vertex of no kept triangle faces the camera

    part = Part()
    s = opts.face_step
    xs = np.arange(oval[:, 0].min(), oval[:, 0].max() + 1e-9, s)
    ys = np.arange(oval[:, 1].min(), oval[:, 1].max() + 1e-9, s)
    gu, gv = (g.ravel() for g in np.meshgrid(xs, ys))
    grid = np.stack([gu, gv], axis=1)
    simplex = tri.find_simplex(grid)
    ok = simplex >= 0
    ok[ok] = keep_tri[simplex[ok]]
    grid, simplex = grid[ok], simplex[ok]
    trans = tri.transform[simplex]  # [K, 3, 2] affine → barycentric
    b2 = np.einsum("kij,kj->ki", trans[:, :2], grid - trans[:, 2])
    bary = np.concatenate([b2, 1 - b2.sum(axis=1, keepdims=True)], axis=1)  # [K, 3]
    verts = tri.simplices[simplex]
    # the mesh's depth, linear over its triangles, has fins along the rim (long triangles from the oval's
    # landmarks to the next ring): a head turn shifts each fin by its depth, saw teeth on the cheek's
    # outline. Near the outline the depth is smoothed over the sample grid and the discs follow that
    # smooth surface (below); inside, the surface is the mesh's.
    z_grid = np.full(len(gu), np.nan)
    z_grid[ok] = np.einsum("kj,kj->k", bary, depth[verts])
    z_grid, rim_w = _smooth_rim(z_grid.reshape(len(ys), len(xs)))
    face_pts_grid = geo.unproject(*np.meshgrid(xs, ys), z_grid)  # [Y, X, 3]
    z = z_grid.ravel()[ok]
    face_pts = face_pts_grid.reshape(-1, 3)[ok]
    rim = rim_w.ravel()[ok] > 0.0
    # inside: discs lean towards the camera (never seen edge-on near the nose wings), and steep surface
    # (under the chin, nose wings) gets wider discs: seen obliquely after a head turn it would otherwise
    # open gaps
    face_n = np.einsum("kj,kjc->kc", bary, vn[verts])
    face_n = face_n / np.maximum(np.linalg.norm(face_n, axis=1, keepdims=True), 1e-12) + [0.0, 0.0, -2.0]
    face_n /= np.linalg.norm(face_n, axis=1, keepdims=True)
    cos_mesh = np.abs(np.einsum("kj,kj->k", bary, vn[verts][..., 2]))
    face_sigma = 0.7 * s * z / f / np.sqrt(np.clip(cos_mesh / 0.85, 0.5, 1.0))
    face_stretch = np.ones(len(z))
    face_slope = np.zeros((len(z), 3))
    # at the rim: each disc lies in the smooth surface's tangent plane and is as long along its slope as
    # the surface it stands for (the grid is regular in the picture, so a steep patch stands for more
    # surface than it shows): from the front it covers the same pixels as a round disc facing the camera,
    # and when the head turns the outline stays closed and smooth (round discs leaning towards the camera
    # on the finned rim gave a saw-toothed far cheek at 15° yaw)
    rim_n = _grid_normals(face_pts_grid).reshape(-1, 3)[ok][rim]
    ray = face_pts[rim] / np.linalg.norm(face_pts[rim], axis=1, keepdims=True)
    cos_rim = np.abs(np.einsum("kj,kj->k", rim_n, ray))
    face_n[rim] = rim_n
    face_sigma[rim] = RIM_DISC_WIDEN * 0.7 * s * z[rim] / f
    face_stretch[rim] = 1.0 / np.maximum(cos_rim, MIN_DISC_COS)
    face_slope[rim] = ray - np.einsum("kj,kj->k", ray, rim_n)[:, None] * rim_n
    # an open mouth in the photo: the face surface never takes the colours of its interior (teeth, a
    # tongue out over the lower lip, the cavity): painted over from around them; the rest face closes it
    mouth_open = float(np.max(geo.feats.mouth.gap(np.linspace(-1, 1, 41)))) > OPEN_GAP
    skin_photo = photo
    if mouth_open:
        skin_photo = paint_over_interior(photo, lm2)[0]
    part.add(
        face_pts,
        face_n,
        face_sigma,
        _bilinear(skin_photo, grid),
        LAYER_HEAD,
        FLAG_DEFORM,
        stretch=face_stretch,
        axes=face_slope,
    )
    n_face = len(face_pts)
    # explicit inner-lip Gaussians exactly on the landmarks (tools measure the aperture on them)
    groups: dict[str, np.ndarray] = {}
    for name, idx in (
        ("inner_lip_upper", LIPS_INNER_UPPER[1:-1]),
        ("inner_lip_lower", LIPS_INNER_LOWER[1:-1]),
    ):
        n0 = sum(len(m) for m in part.means)
        ii = list(idx)
        part.add(
            pts3[ii], vn[ii], 0.5 * s * depth[ii] / f, _bilinear(skin_photo, lm2[ii]), LAYER_HEAD, FLAG_DEFORM
        )
        groups[name] = np.arange(n0, n0 + len(ii))
    step(f"face surface: {n_face} Gaussians")

    # --- features for the rig and the inner layers
    feats = geo.feats
    mouth, eye_l, eye_r = feats.mouth, feats.eye_left, feats.eye_right
    face_w = geo.face_w

    def photo_inside(poly: np.ndarray, dilate: float) -> Callable[[np.ndarray], np.ndarray]:
        centre = poly.mean(axis=0)
        grown = centre + (poly - centre) * (1 + dilate / max(float(np.ptp(poly[:, 0])), 1.0))

        def fn_(p: np.ndarray) -> np.ndarray:
            uv = project(p)
            col = _bilinear(photo, uv)
            col[~_points_in_polygon(uv, grown)] = np.nan
            return col

        return fn_

    lip_all = np.concatenate([mouth.local(pts3[list(LIPS_OUTER)]), mouth.local(pts3[[78, 308]])])
    m_depth = float(lip_all[:, 2].max()) + 0.12
    inner_mouth(part, mouth, m_depth, s * z0 / f / mouth.half_width, photo_inside(mouth_poly, 6.0))
    for eye, poly in ((eye_l, eye_l_poly), (eye_r, eye_r_poly)):
        inside = _mask(poly, size)
        sclera = np.median(photo[inside], axis=0) if inside.any() else None
        if sclera is not None:
            bright = photo[inside][photo[inside].sum(axis=1) >= np.percentile(photo[inside].sum(axis=1), 70)]
            sclera = np.median(bright, axis=0)
        lid_depth = float(
            eye.local(pts3[list(EYE_L_UPPER + EYE_L_LOWER if eye is eye_l else EYE_R_UPPER + EYE_R_LOWER)])[
                :, 2
            ].max()
        )
        eyeball(
            part, eye, lid_depth + 0.12, s * z0 / f / eye.half_width, photo_inside(poly, 3.0), sclera, sclera
        )
    n_inner = sum(len(m) for m in part.means)
    step("inner mouth and eyes")

    # --- 2.5D layers: head backing (hair, ears) and the static rest with the head in-painted
    face_mask = _mask(oval, size)
    top = lm2[FOREHEAD]
    chin2 = lm2[CHIN]
    cx_ = 0.5 * (lm2[CHEEK_L, 0] + lm2[CHEEK_R, 0])
    head_h = chin2[1] - top[1]
    ell_c = np.array([cx_, top[1] + 0.32 * head_h])
    ell_r = np.array([0.62 * face_w_px * 1.12, 0.78 * head_h])
    gy, gx = np.mgrid[0:size, 0:size] + 0.5
    head_mask = (((gx - ell_c[0]) / ell_r[0]) ** 2 + ((gy - ell_c[1]) / ell_r[1]) ** 2 < 1.0) & (
        gy < chin2[1] - 0.15 * head_h
    )
    from scipy.ndimage import binary_dilation

    head_mask |= binary_dilation(face_mask, iterations=12)  # a margin past the face's rim (chin included)
    hs = opts.head_step
    gx_, gy_ = np.meshgrid(np.arange(hs / 2, size, hs), np.arange(hs / 2, size, hs))  # [gh, gw]
    guv = np.stack([gx_.ravel(), gy_.ravel()], axis=1)
    # the backing: a smooth head-shaped depth map (deeper towards the rim, so that it stays behind
    # the face when the head turns), always behind the face surface, with discs along its surface
    z_c = z0 + 0.6 * face_w
    r2 = np.clip(((guv[:, 0] - ell_c[0]) / ell_r[0]) ** 2 + ((guv[:, 1] - ell_c[1]) / ell_r[1]) ** 2, 0, 1.5)
    hz = z0 + 0.12 * face_w + 0.48 * face_w * r2
    gsimp = tri.find_simplex(guv)
    on_mesh = gsimp >= 0
    gt = tri.transform[gsimp[on_mesh]]
    gb2 = np.einsum("kij,kj->ki", gt[:, :2], guv[on_mesh] - gt[:, 2])
    gbary = np.concatenate([gb2, 1 - gb2.sum(axis=1, keepdims=True)], axis=1)
    zf = np.full(len(guv), np.nan)
    zf[on_mesh] = np.einsum("kj,kj->k", gbary, depth[tri.simplices[gsimp[on_mesh]]])
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    # the face depth carried past the mesh's rim (nearest value), so the backing has no step there
    _, (ni, nj) = distance_transform_edt(~on_mesh.reshape(gx_.shape), return_indices=True)
    zf_ext = zf.reshape(gx_.shape)[ni, nj].ravel()
    hz = np.maximum(hz, zf_ext + 0.12 * face_w)
    hz = gaussian_filter(hz.reshape(gx_.shape), 2.0).ravel()
    hz[on_mesh] = np.maximum(hz[on_mesh], zf[on_mesh] + 0.06 * face_w)
    dz_du = np.gradient(hz.reshape(gx_.shape), hs, axis=1).ravel() * f / hz  # ∂z/∂x (world)
    dz_dv = np.gradient(hz.reshape(gx_.shape), hs, axis=0).ravel() * f / hz
    h_normal = np.stack([dz_du, dz_dv, -np.ones_like(hz)], axis=1)
    cos_view = 1.0 / np.linalg.norm(h_normal, axis=1)
    h_sigma = 0.85 * hs * hz / f / np.maximum(cos_view, 0.6)  # soft: hair, and room to stretch
    hsel = head_mask[np.clip(guv[:, 1].astype(int), 0, size - 1), np.clip(guv[:, 0].astype(int), 0, size - 1)]
    # around the mouth the backing lies deeper than the inner-mouth layer (so the open mouth shows
    # the cavity) and follows the face's deformation (so stretched skin never shows a hole)
    mloc = mouth.local(unproject(guv[:, 0], guv[:, 1], np.full(len(guv), float(mouth.centre[2]))))
    # (down to CAVITY_BOTTOM: below it the backing stays close behind the face, in front of the cavity,
    # so the cavity never shows under the chin when the head tips back — the chin is ~1.85 below)
    wz = (
        np.clip((1.6 - np.abs(mloc[:, 0])) / 0.5, 0, 1)
        * np.clip((mloc[:, 1] + 1.2) / 0.5, 0, 1)
        * np.clip((CAVITY_BOTTOM + 0.25 - mloc[:, 1]) / 0.35, 0, 1)
    )
    hz[on_mesh] = np.maximum(hz[on_mesh], zf[on_mesh] + (0.06 + 0.3 * wz[on_mesh]) * face_w)
    # the backing follows the face's deformation fields (they fade out away from the features)
    for sel, flag in ((hsel, FLAG_DEFORM),):
        part.add(
            unproject(guv[sel, 0], guv[sel, 1], hz[sel]),
            h_normal[sel],
            h_sigma[sel],
            _bilinear(photo, guv[sel]),
            LAYER_HEAD,
            flag,
        )
    n_head = sum(len(m) for m in part.means)

    behind = _inpaint(photo, binary_dilation(head_mask, iterations=4))
    static_z = z_c + 0.5 * face_w
    ss = opts.static_step
    sx, sy = (g.ravel() for g in np.meshgrid(np.arange(ss / 2, size, ss), np.arange(ss / 2, size, ss)))
    suv = np.stack([sx, sy], axis=1)
    part.add(
        unproject(sx, sy, np.full(len(sx), static_z)),
        np.array([0.0, 0.0, -1.0]),
        0.8 * ss * static_z / f,
        _bilinear(behind, suv),
        LAYER_STATIC,
    )
    step("hair, neck, shoulders and background")

    means = np.concatenate(part.means)
    meta = face_metadata(feats, camera, means, groups)
    meta["face_oval_px"] = oval.round(2).tolist()
    meta["crop_box_src"] = [round(v, 3) for v in box]
    # the source landmarks in the avatar camera's pixels: the rig's features and the landmark
    # anchors of video driving (engines.create.reenact) are recomputed from them
    meta["source_landmarks_px"] = np.round(lm, 3).tolist()
    meta["provenance"] = dict(provenance or {"source": "photo", "licence": "unknown"})
    meta["creator"] = "engines.create.photo"
    gap = float(np.max(mouth.gap(np.linspace(-1, 1, 41))))
    meta["neutral_lip_gap_px"] = round(gap * mouth.half_width * f / float(mouth.centre[2]), 2)
    avatar = to_avatar(part, feats, camera, np.zeros(3), meta, progress=None)
    step("rig")
    # whatever the photo's expression (open mouth, smile, wide eyes), the rest face is closed and relaxed
    rest, measures = rest_expression(avatar, feats, lm)
    avatar.metadata["rest_expression"] = rest
    avatar.metadata["photo_expression"] = measures
    step(f"rest expression: {rest or 'neutral'}")

    # --- colour refinement: rendering is linear in the colours
    visible = np.zeros(avatar.count, bool)
    visible[:n_face] = True
    lay = avatar.layers
    uv_all = project(avatar.means.astype(np.float64))
    in_img = (uv_all[:, 0] >= 0) & (uv_all[:, 0] < size) & (uv_all[:, 1] >= 0) & (uv_all[:, 1] < size)
    uvi = np.clip(uv_all.astype(int), 0, size - 1)
    in_mouth = _points_in_polygon(uv_all, mouth_poly)
    in_eyes = _points_in_polygon(uv_all, eye_l_poly) | _points_in_polygon(uv_all, eye_r_poly)
    order = np.arange(avatar.count)
    # only the teeth plane is seen through the neutral opening (tongue and cavity lie behind it)
    on_teeth_plane = np.abs(mouth.local(avatar.means.astype(np.float64))[:, 2] - m_depth) < 0.02
    visible |= (
        (order >= n_face)
        & (order < n_inner)
        & (
            (((lay == LAYER_MOUTH) | (lay == LAYER_JAW)) & in_mouth & on_teeth_plane)
            | ((lay == LAYER_EYES) & in_eyes)
        )
    )
    visible |= (order >= n_inner) & (order < n_head) & ~face_mask[uvi[:, 1], uvi[:, 0]]
    visible |= (order >= n_head) & in_img & ~head_mask[uvi[:, 1], uvi[:, 0]]
    # wide, strongly overlapping Gaussians (hair, background) take smaller steps: the residual
    # correction is a Jacobi iteration and would amplify stripes with a large step there
    rate = np.where(order < n_inner, 0.6, 0.15)[visible]
    # the target: the photo, with its mouth interior painted over outside the inner-lip contour (what
    # the face surface shows there); inside the contour the inner-mouth layer reproduces the photo
    target = np.where(_mask(mouth_poly, size)[..., None], photo, skin_photo)
    psnr = refine_colors(avatar, target, visible, face_mask, opts.refine_iters, step, rate)
    avatar.metadata["neutral_psnr_face_db"] = round(psnr, 2)
    avatar = sort_by_layer(avatar)
    avatar.metadata["creation_seconds"] = round(time.monotonic() - t0, 2)
    return avatar


def refine_colors(
    avatar: Avatar,
    target: np.ndarray,  # [H, W, 3] float in [0, 1] at the camera's size
    which: np.ndarray,  # [N] bool: Gaussians visible in the neutral pose
    region: np.ndarray,  # [H, W] bool: pixels whose PSNR is tracked
    iters: int,
    step: Progress,
    rate: float | np.ndarray = 0.6,  # step size, scalar or [which.sum()]
) -> float:
    """Correct colours of the ``which`` Gaussians by the residual at their centres (rendering is
    linear in the colours); keeps the best round. Returns the PSNR over ``region`` in dB."""
    from engines.splat.rasterize import rasterize
    from engines.splat.rig import pose

    cam = avatar.camera
    uv = np.stack(
        [
            cam.fx * avatar.means[:, 0] / avatar.means[:, 2] + cam.cx,
            cam.fy * avatar.means[:, 1] / avatar.means[:, 2] + cam.cy,
        ],
        axis=1,
    )[which]
    best, best_colors = -1.0, avatar.colors.copy()
    for it in range(iters + 1):
        g = pose(avatar, avatar.neutral(1))
        img = rasterize(g, cam, avatar.background, backend="cpu")[0].astype(np.float64) / 255.0
        err = target - img
        sel = err[region]
        psnr = float(10 * np.log10(1.0 / max(np.mean(sel**2), 1e-12)))
        step(f"colour refinement {it}/{iters}: PSNR {psnr:.2f} dB")
        if psnr > best:
            best, best_colors = psnr, avatar.colors.copy()
        if it == iters:
            break
        corr = _bilinear(err, uv)
        step_ = np.asarray(rate, dtype=np.float64).reshape(-1, 1) if np.ndim(rate) else float(rate)
        avatar.colors[which] = np.clip(avatar.colors[which] + step_ * corr, 0.0, 1.0).astype(np.float32)
    avatar.colors[:] = best_colors
    return best


def create_from_photo(
    path: str | Path, opts: PhotoOptions | None = None, progress: Progress | None = None
) -> Avatar:
    """Avatar from an image file (any frontal portrait with one face)."""
    path = Path(path)
    image = load_image(path)
    return create_from_image(
        image,
        opts,
        provenance={"source": str(path.name), "licence": "as the source photo"},
        progress=progress,
    )


def create_astronaut(opts: PhotoOptions | None = None, progress: Progress | None = None) -> Avatar:
    """The default avatar: built from ``skimage.data.astronaut()``."""
    return create_from_image(
        astronaut_image(),
        opts,
        provenance={
            "source": "skimage.data.astronaut() (Eileen Collins, NASA portrait, 512x512)",
            "licence": LICENCE_ASTRONAUT,
            "rebuild": "splatcast avatar create --astronaut -o engines/data/default_avatar.safetensors",
        },
        progress=progress,
    )
