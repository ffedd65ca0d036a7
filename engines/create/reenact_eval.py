"""Self-reenactment metrics and the report of ``splatcast avatar eval``.

The driver (``avatar eval``) renders an avatar with each held-out frame's
tracked pose and expression and hands this module the real frame, the render,
and the face landmarks found on both (mediapipe, in its own environment: this
module imports no tracker). Per frame it measures:

* **PSNR and SSIM on the face region** (inside the real frame's face oval) and
  on a **mouth crop** (a square around the real lips, padded);
* **mouth-landmark distance (LMD)**: mean distance between the mediapipe inner
  and outer lip points found on the render and on the real frame, over the
  real frame's inter-ocular distance (outer eye corners 33–263), so it does
  not depend on the resolution;
* **head-pose error**: the angle of the rotation between the render's and the
  real frame's head pose, in degrees.

SSIM is Wang et al.'s (Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03) on the
luma (BT.601) of 8-bit images, averaged over the region. PSNR uses the peak
255 for uint8 images and 1 for float images. A metric that cannot be measured
on a frame (no face found on the render) is NaN there and left out of the
means, and the summary counts such frames.

:func:`write_report` writes ``report.json``, ``report.md`` (a Markdown table
and the targets), ``sheet.png`` (rows of real | replica | one-shot …) and
``side_by_side.mp4``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.create.photo import FACE_OVAL, LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER, _points_in_polygon

#: Mediapipe lip points compared by LMD: the outer contour and both inner contours (corners once).
LIP_POINTS: tuple[int, ...] = tuple(dict.fromkeys(LIPS_OUTER + LIPS_INNER_UPPER + LIPS_INNER_LOWER))
#: Outer eye corners: the inter-ocular distance that normalises LMD.
EYE_OUTER = (33, 263)
METRICS = ("psnr_face", "ssim_face", "psnr_mouth", "ssim_mouth", "lmd", "pose_err_deg")
#: The issue's targets for the replica against the one-shot baseline.
TARGET_PSNR_GAIN_DB = 2.0
TARGET_LMD_RATIO = 0.75


class EvalError(ValueError):
    """Inputs to a metric do not fit (shapes, missing landmarks)."""


# ------------------------------------------------------------------ image metrics


def _as_float(img: np.ndarray) -> tuple[np.ndarray, float]:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64), 255.0
    return a.astype(np.float64), 1.0


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise EvalError(f"images differ in shape: {np.shape(a)} vs {np.shape(b)}")
    if np.ndim(a) != 3 or np.shape(a)[2] != 3:
        raise EvalError(f"expected RGB images [H, W, 3], got {np.shape(a)}")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two RGB images (over ``mask`` [H, W] bool when given); inf when equal."""
    _check_pair(a, b)
    fa, peak = _as_float(a)
    fb, _ = _as_float(b)
    diff = (fa - fb) ** 2
    sel = diff[mask] if mask is not None else diff.reshape(-1, 3)
    if sel.size == 0:
        raise EvalError("empty region")
    mse = float(np.mean(sel))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _luma(img: np.ndarray) -> np.ndarray:
    f, peak = _as_float(img)
    return (f @ np.array([0.299, 0.587, 0.114])) * (255.0 / peak)


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM [H, W] of the luma of two RGB images (Gaussian window, 8-bit constants)."""
    from scipy.ndimage import gaussian_filter

    _check_pair(a, b)
    x, y = _luma(a), _luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(v: np.ndarray) -> np.ndarray:
        return np.asarray(gaussian_filter(v, sigma, mode="reflect", truncate=3.5))

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM over ``mask`` (whole image when None); 1.0 for equal images."""
    if mask is not None and not np.any(mask):
        raise EvalError("empty region")
    if mask is not None:  # only the mask's bounding box (+ the window's reach) needs computing
        ys, xs = np.nonzero(mask)
        pad = 8
        y0, y1 = max(int(ys.min()) - pad, 0), int(ys.max()) + pad + 1
        x0, x1 = max(int(xs.min()) - pad, 0), int(xs.max()) + pad + 1
        m = ssim_map(a[y0:y1, x0:x1], b[y0:y1, x0:x1])
        return float(np.mean(m[mask[y0:y1, x0:x1]]))
    return float(np.mean(ssim_map(a, b)))


# ------------------------------------------------------------------ regions from landmarks


def _lm2(lm: np.ndarray) -> np.ndarray:
    a = np.asarray(lm, np.float64)
    if a.ndim != 2 or a.shape[0] < 478 or a.shape[1] < 2:
        raise EvalError(f"landmarks must be [478, 2|3], got {a.shape}")
    return a[:, :2]


def face_mask(lm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """bool [H, W]: pixels inside the face oval of landmarks ``lm`` [478, 2|3] (pixels)."""
    h, w = int(shape[0]), int(shape[1])
    poly = _lm2(lm)[list(FACE_OVAL)]
    x0, y0 = np.clip(np.floor(poly.min(axis=0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(poly.max(axis=0)).astype(int) + 1, 0, [w, h])
    out = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return out
    gy, gx = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], axis=1)
    out[y0:y1, x0:x1] = _points_in_polygon(pts, poly).reshape(y1 - y0, x1 - x0)
    return out


def mouth_box(lm: np.ndarray, shape: tuple[int, ...], pad: float = 0.35) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a square around the outer lips, ``pad`` × their width on each side, in the image."""
    lips = _lm2(lm)[list(LIPS_OUTER)]
    c = (lips.min(axis=0) + lips.max(axis=0)) / 2
    side = float(np.ptp(lips[:, 0])) * (1 + 2 * pad)
    side = max(side, float(np.ptp(lips[:, 1])) * (1 + 2 * pad), 8.0)
    h, w = int(shape[0]), int(shape[1])
    x0 = int(np.clip(round(c[0] - side / 2), 0, w - 1))
    y0 = int(np.clip(round(c[1] - side / 2), 0, h - 1))
    x1 = int(np.clip(round(c[0] + side / 2), x0 + 1, w))
    y1 = int(np.clip(round(c[1] + side / 2), y0 + 1, h))
    return x0, y0, x1, y1


def inter_ocular(lm: np.ndarray) -> float:
    p = _lm2(lm)
    return float(np.linalg.norm(p[EYE_OUTER[0]] - p[EYE_OUTER[1]]))


def mouth_lmd(pred_lm: np.ndarray, real_lm: np.ndarray) -> float:
    """Mean distance of the lip points (:data:`LIP_POINTS`) over the real frame's inter-ocular distance."""
    p, r = _lm2(pred_lm), _lm2(real_lm)
    iod = inter_ocular(r)
    if not np.isfinite(iod) or iod <= 0:
        raise EvalError("the real landmarks have no inter-ocular distance")
    idx = list(LIP_POINTS)
    return float(np.mean(np.linalg.norm(p[idx] - r[idx], axis=1)) / iod)


def _rotation(pose: np.ndarray) -> np.ndarray:
    from engines.splat.rig import euler_matrix

    p = np.asarray(pose, np.float64).reshape(3)
    return euler_matrix(p[:1], p[1:2], p[2:3])[0].astype(np.float64)


def pose_error_deg(pred: np.ndarray, real: np.ndarray) -> float:
    """Angle (degrees) of the rotation between two head poses (pitch, yaw, roll) in radians."""
    r = _rotation(pred).T @ _rotation(real)
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


# ------------------------------------------------------------------ per frame and summary


@dataclass(frozen=True)
class FrameScores:
    frame: int  # frame number in the clip
    psnr_face: float
    ssim_face: float
    psnr_mouth: float
    ssim_mouth: float
    lmd: float  # NaN when either image had no face found
    pose_err_deg: float  # NaN when a pose is missing


def score_frame(
    frame: int,
    real: np.ndarray,  # uint8 [H, W, 3]
    render: np.ndarray,  # uint8 [H, W, 3]
    real_lm: np.ndarray | None,  # [478, 2|3] pixels found on the real frame
    render_lm: np.ndarray | None,  # [478, 2|3] pixels found on the render
    real_pose: np.ndarray | None = None,  # [3] radians
    render_pose: np.ndarray | None = None,  # [3] radians
) -> FrameScores:
    """Every metric of one frame; regions come from the real frame's landmarks."""
    _check_pair(real, render)
    nan = math.nan
    if real_lm is None or not np.all(np.isfinite(_lm2(real_lm))):
        return FrameScores(frame, nan, nan, nan, nan, nan, nan)
    mask = face_mask(real_lm, real.shape)
    x0, y0, x1, y1 = mouth_box(real_lm, real.shape)
    rc, pc = real[y0:y1, x0:x1], render[y0:y1, x0:x1]
    have_render_lm = render_lm is not None and bool(np.all(np.isfinite(_lm2(render_lm))))
    lmd = mouth_lmd(render_lm, real_lm) if have_render_lm and render_lm is not None else nan
    pose = nan
    if real_pose is not None and render_pose is not None:
        pose = pose_error_deg(render_pose, real_pose)
    return FrameScores(
        frame=int(frame),
        psnr_face=psnr(real, render, mask) if mask.any() else nan,
        ssim_face=ssim(real, render, mask) if mask.any() else nan,
        psnr_mouth=psnr(rc, pc),
        ssim_mouth=ssim(rc, pc),
        lmd=lmd,
        pose_err_deg=pose,
    )


def summarise(scores: Sequence[FrameScores]) -> dict[str, dict[str, float]]:
    """Per metric: mean, median, p90 and the count of frames where it was measured."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        v = np.array([getattr(s, m) for s in scores], np.float64)
        ok = v[~np.isnan(v)]
        if ok.size == 0:
            out[m] = {"mean": math.nan, "median": math.nan, "p90": math.nan, "frames": 0}
            continue
        finite = ok[np.isfinite(ok)]
        with np.errstate(invalid="ignore"):
            out[m] = {
                "mean": float(np.mean(ok)),
                "median": float(np.median(ok)),
                "p90": float(np.percentile(finite, 90)) if finite.size else float(ok[0]),
                "frames": int(ok.size),
            }
    return out


@dataclass
class EvalReport:
    """Scores of one or more avatars (``methods``: e.g. ``replica``, ``one-shot``) on the same held-out frames."""

    clip: str
    frames: list[int]  # held-out frame numbers, in order
    methods: dict[str, list[FrameScores]]
    baseline: str = "one-shot"
    candidate: str = "replica"
    info: dict[str, Any] = field(default_factory=dict)  # build times, avatar paths, sizes ...

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        return {name: summarise(s) for name, s in self.methods.items()}

    def targets(self) -> dict[str, Any]:
        """The issue's targets (candidate vs baseline, means over the held-out frames)."""
        if self.candidate not in self.methods or self.baseline not in self.methods:
            return {}
        s = self.summary()
        c, b = s[self.candidate], s[self.baseline]
        face = c["psnr_face"]["mean"] - b["psnr_face"]["mean"]
        mouth = c["psnr_mouth"]["mean"] - b["psnr_mouth"]["mean"]
        ratio = c["lmd"]["mean"] / b["lmd"]["mean"] if b["lmd"]["mean"] > 0 else math.nan
        return {
            "psnr_face_gain_db": face,
            "psnr_mouth_gain_db": mouth,
            "lmd_ratio": ratio,
            "psnr_face_met": bool(face >= TARGET_PSNR_GAIN_DB),
            "psnr_mouth_met": bool(mouth >= TARGET_PSNR_GAIN_DB),
            "lmd_met": bool(ratio <= TARGET_LMD_RATIO),
        }

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "clip": self.clip,
                "heldout_frames": self.frames,
                "baseline": self.baseline,
                "candidate": self.candidate,
                "summary": self.summary(),
                "targets": self.targets(),
                "per_frame": {k: [asdict(s) for s in v] for k, v in self.methods.items()},
                "info": self.info,
            }
        )

    def markdown(self) -> str:
        s = self.summary()
        head = "| avatar | face PSNR (dB) | face SSIM | mouth PSNR (dB) | mouth SSIM | mouth LMD | pose error (°) |"
        lines = [
            f"Self-reenactment on {len(self.frames)} held-out frames of `{self.clip}` (means; LMD over the inter-ocular distance).",
            "",
            head,
            "|" + "---|" * 7,
        ]
        for name, m in s.items():
            cells = [
                _fmt(m[k]["mean"], 2 if k.startswith("psnr") or k == "pose_err_deg" else 3) for k in METRICS
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        t = self.targets()
        if t:
            lines += [
                "",
                f"Targets ({self.candidate} vs {self.baseline}): face PSNR +{_fmt(t['psnr_face_gain_db'], 2)} dB "
                f"(≥ +{TARGET_PSNR_GAIN_DB:g}: {'met' if t['psnr_face_met'] else 'not met'}), "
                f"mouth PSNR +{_fmt(t['psnr_mouth_gain_db'], 2)} dB "
                f"(≥ +{TARGET_PSNR_GAIN_DB:g}: {'met' if t['psnr_mouth_met'] else 'not met'}), "
                f"LMD × {_fmt(t['lmd_ratio'], 2)} (≤ {TARGET_LMD_RATIO:g}: {'met' if t['lmd_met'] else 'not met'}).",
            ]
        return "\n".join(lines) + "\n"


def _fmt(v: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{v:.{digits}f}"


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: NaN → null, ±inf → the strings "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


# ------------------------------------------------------------------ pictures


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1: a scalable default font
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


def _labelled_row(
    images: Sequence[np.ndarray], labels: Sequence[str] | None, label_h: int = 28
) -> np.ndarray:
    from PIL import Image, ImageDraw

    h = max(i.shape[0] for i in images)
    row = np.concatenate([np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0))) for i in images], axis=1)
    if not labels:
        return row
    canvas = Image.new("RGB", (row.shape[1], h + label_h), (255, 255, 255))
    canvas.paste(Image.fromarray(row), (0, label_h))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for img, label in zip(images, labels, strict=True):
        draw.text((x + 8, 4), label, fill=(0, 0, 0), font=_font(label_h - 8))
        x += img.shape[1]
    return np.asarray(canvas)


def side_by_side(real: np.ndarray, renders: dict[str, np.ndarray], labels: bool = True) -> np.ndarray:
    """One frame: real | each render, with a label bar when ``labels``."""
    names = ["real", *renders]
    return _labelled_row([real, *renders.values()], names if labels else None)


def write_report(
    report: EvalReport,
    out_dir: str | Path,
    real_frames: Sequence[np.ndarray],  # uint8 [H, W, 3] per held-out frame
    renders: dict[str, Sequence[np.ndarray]],  # method -> uint8 [H, W, 3] per held-out frame
    fps: float = 25.0,
    sheet_rows: int = 6,
) -> dict[str, Path]:
    """``report.json``, ``report.md``, ``sheet.png`` and ``side_by_side.mp4`` in ``out_dir``."""
    from PIL import Image

    from engines.create.mp4 import write_mp4

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(real_frames)
    for name, seq in renders.items():
        if len(seq) != n:
            raise EvalError(f"{name}: {len(seq)} renders for {n} real frames")
    paths = {"json": out / "report.json", "markdown": out / "report.md", "sheet": out / "sheet.png",
             "video": out / "side_by_side.mp4"}  # fmt: skip
    paths["json"].write_text(json.dumps(report.to_json(), indent=1))
    paths["markdown"].write_text(report.markdown())
    if n:
        pick = np.unique(np.linspace(0, n - 1, min(sheet_rows, n)).round().astype(int))
        rows = [
            side_by_side(real_frames[k], {m: renders[m][k] for m in renders}, labels=(i == 0))
            for i, k in enumerate(pick)
        ]
        width = max(r.shape[1] for r in rows)
        sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
        Image.fromarray(sheet).save(paths["sheet"])
        frames = (side_by_side(real_frames[k], {m: renders[m][k] for m in renders}) for k in range(n))
        write_mp4(paths["video"], frames, round(fps))
    return paths
