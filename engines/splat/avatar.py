"""The avatar file format: Gaussians + rig tensors + JSON metadata in one safetensors file.

An avatar is a set of 3D Gaussians in camera space (x right, y down, z away
from the camera) seen by one pinhole :class:`~engines.splat.types.Camera`,
plus a rig (see :mod:`engines.splat.rig`):

* per-channel sparse position deltas (CSR over channels: ``delta_offsets``
  [C+1], ``delta_index`` [M], ``delta_means`` [M, 3]);
* a rigid jaw for the inner-mouth layer: rotation about ``jaw_axis`` through
  ``jaw_pivot`` by ``params @ jaw_angle`` radians, then a translation of
  ``params @ jaw_translation``;
* a rigid head pose (``headPitch``/``headYaw``/``headRoll`` in radians)
  about ``head_pivot`` for every layer except the static torso/background.

Layers (``layers`` [N] int8): :data:`LAYER_STATIC` (torso, background: never
moves), :data:`LAYER_HEAD` (face surface, hair), :data:`LAYER_JAW` (lower
teeth and tongue: the rigid jaw), :data:`LAYER_EYES` (eyeballs; gaze),
:data:`LAYER_MOUTH` (dark cavity and upper teeth: head-rigid, behind the lips).

The file is read with ``safetensors`` only (never unpickled); every tensor's
shape, dtype and finiteness and the format version are checked on load and
anything wrong raises :class:`AvatarFormatError`.

The bundled default avatar is rebuilt with::

    splatcast avatar create --astronaut -o engines/data/default_avatar.safetensors
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.arkit import ARKIT_BLENDSHAPES, POSE_CHANNELS
from engines.splat.types import Camera

logger = logging.getLogger(__name__)

FORMAT_NAME = "splatcast-avatar"
FORMAT_VERSION = 1
METADATA_KEY = "splatcast"

LAYER_STATIC = 0
LAYER_HEAD = 1
LAYER_JAW = 2
LAYER_EYES = 3
LAYER_MOUTH = 4
LAYER_NAMES: dict[int, str] = {
    LAYER_STATIC: "static",
    LAYER_HEAD: "head",
    LAYER_JAW: "jaw",
    LAYER_EYES: "eyes",
    LAYER_MOUTH: "mouth",
}

#: Every rig channel, in the order of ``params[:, c]``: ARKit blendshapes then pose channels.
DEFAULT_CHANNELS: tuple[str, ...] = ARKIT_BLENDSHAPES + POSE_CHANNELS


class AvatarFormatError(ValueError):
    """An avatar file (or in-memory avatar) is malformed; the message says what is wrong."""


@dataclass
class LodLevel:
    """A distilled level of detail: a subset of the Gaussians with refitted appearance."""

    index: np.ndarray  # [K] int32, indices into the full set
    scales: np.ndarray  # [K, 3] float32
    opacities: np.ndarray  # [K] float32
    colors: np.ndarray  # [K, 3] float32


@dataclass
class Rig:
    """Rig tensors (see the module docstring)."""

    delta_offsets: np.ndarray  # [C + 1] int64, channel c owns rows delta_offsets[c]:delta_offsets[c+1]
    delta_index: np.ndarray  # [M] int32, Gaussian index of each delta row (unique within a channel)
    delta_means: np.ndarray  # [M, 3] float32, position change at channel value 1
    head_pivot: np.ndarray  # [3] float32, centre of head rotation (camera space)
    jaw_pivot: np.ndarray  # [3] float32, a point on the jaw hinge axis
    jaw_axis: np.ndarray  # [3] float32, unit hinge axis (positive angle opens the mouth)
    jaw_angle: np.ndarray  # [C] float32, jaw rotation (radians) per unit of each channel
    jaw_translation: np.ndarray  # [C, 3] float32, jaw translation per unit of each channel

    @staticmethod
    def empty(n_channels: int) -> Rig:
        return Rig(
            delta_offsets=np.zeros(n_channels + 1, dtype=np.int64),
            delta_index=np.zeros(0, dtype=np.int32),
            delta_means=np.zeros((0, 3), dtype=np.float32),
            head_pivot=np.zeros(3, dtype=np.float32),
            jaw_pivot=np.zeros(3, dtype=np.float32),
            jaw_axis=np.array([1.0, 0.0, 0.0], dtype=np.float32),
            jaw_angle=np.zeros(n_channels, dtype=np.float32),
            jaw_translation=np.zeros((n_channels, 3), dtype=np.float32),
        )

    def channel_deltas(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(index [K] int32, deltas [K, 3] float32) of channel ``c``."""
        s, e = int(self.delta_offsets[c]), int(self.delta_offsets[c + 1])
        return self.delta_index[s:e], self.delta_means[s:e]


@dataclass
class Avatar:
    """Gaussians, rig and metadata of one avatar (all arrays float32 unless noted)."""

    means: np.ndarray  # [N, 3] float32, camera space, neutral pose
    quats: np.ndarray  # [N, 4] float32, (w, x, y, z), unit
    scales: np.ndarray  # [N, 3] float32, standard deviations
    opacities: np.ndarray  # [N] float32 in (0, 1]
    colors: np.ndarray  # [N, 3] float32 in [0, 1]
    layers: np.ndarray  # [N] int8, LAYER_* codes
    rig: Rig
    channels: tuple[str, ...]
    camera: Camera
    background: np.ndarray  # [3] float32 in [0, 1]
    metadata: dict[str, Any] = field(default_factory=dict)
    lods: list[LodLevel] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    def neutral(self, batch: int = 1) -> np.ndarray:
        """Neutral rig parameters: float32 [batch, C] of zeros (identity deformation)."""
        if batch < 1:
            raise ValueError(f"batch must be ≥ 1, got {batch}")
        return np.zeros((batch, len(self.channels)), dtype=np.float32)

    def rest(self, batch: int = 1) -> np.ndarray:
        """The relaxed, closed-mouth expression: float32 [batch, C].

        ``neutral`` reproduces the source photo; when the photo shows an
        expression (an open mouth, a smile, wide eyes), ``metadata["rest_expression"]``
        holds the channel values that undo it (e.g. ``jawOpen`` −0.1 with
        ``mouthPressLeft/Right`` 0.7; see :mod:`engines.create.relax`).
        Speech targets (visemes) are added on top of this, not of ``neutral``.
        """
        values = self.metadata.get("rest_expression") or {}
        return self.params({k: float(v) for k, v in values.items() if k in self.channels}, batch)

    def channel_index(self, name: str) -> int:
        """Column of channel ``name`` in the parameter matrix."""
        try:
            return self.channels.index(name)
        except ValueError:
            raise KeyError(f"avatar has no channel {name!r}; channels: {', '.join(self.channels)}") from None

    def params(self, values: dict[str, float], batch: int = 1) -> np.ndarray:
        """float32 [batch, C] with the named channels set and the rest neutral."""
        out = self.neutral(batch)
        for name, value in values.items():
            out[:, self.channel_index(name)] = value
        return out

    def validate(self) -> None:
        """Raise :class:`AvatarFormatError` unless every array is consistent and finite."""
        _validate(self)


# jaw first, static last: the rigid jaw and the head-pose set become contiguous row ranges (fast pose)
_LAYER_ORDER = {LAYER_JAW: 0, LAYER_MOUTH: 1, LAYER_EYES: 2, LAYER_HEAD: 3, LAYER_STATIC: 4}


def sort_by_layer(avatar: Avatar) -> Avatar:
    """The same avatar with its Gaussians reordered by layer (stable); rig, LOD and metadata indices follow."""
    key = np.vectorize(_LAYER_ORDER.get)(avatar.layers.astype(int))
    perm = np.argsort(key, kind="stable")  # new row i holds old row perm[i]
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    r = avatar.rig
    meta = dict(avatar.metadata)
    groups = meta.get("landmark_gaussians")
    if isinstance(groups, dict):
        meta["landmark_gaussians"] = {
            k: inv[np.asarray(v, dtype=np.int64)].tolist() for k, v in groups.items()
        }
    return Avatar(
        means=avatar.means[perm],
        quats=avatar.quats[perm],
        scales=avatar.scales[perm],
        opacities=avatar.opacities[perm],
        colors=avatar.colors[perm],
        layers=avatar.layers[perm],
        rig=Rig(
            delta_offsets=r.delta_offsets.copy(),
            delta_index=inv[r.delta_index].astype(np.int32),
            delta_means=r.delta_means.copy(),
            head_pivot=r.head_pivot,
            jaw_pivot=r.jaw_pivot,
            jaw_axis=r.jaw_axis,
            jaw_angle=r.jaw_angle,
            jaw_translation=r.jaw_translation,
        ),
        channels=avatar.channels,
        camera=avatar.camera,
        background=avatar.background,
        metadata=meta,
        lods=[
            LodLevel(inv[lod.index].astype(np.int32), lod.scales, lod.opacities, lod.colors)
            for lod in avatar.lods
        ],
    )


# --------------------------------------------------------------------------- validation


def _fail(msg: str) -> AvatarFormatError:
    return AvatarFormatError(f"invalid avatar: {msg}")


def _check(name: str, arr: Any, shape: tuple[int | None, ...], kinds: str = "f") -> None:
    if not isinstance(arr, np.ndarray):
        raise _fail(f"{name} must be an array, got {type(arr).__name__}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise _fail(f"{name} must have shape [{want}], got {list(arr.shape)}")
    if arr.dtype.kind not in kinds:
        raise _fail(f"{name} has dtype {arr.dtype}, expected kind {kinds!r}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise _fail(f"{name} contains NaN or infinite values")


def _validate(a: Avatar) -> None:
    n = a.means.shape[0] if isinstance(a.means, np.ndarray) and a.means.ndim == 2 else -1
    if n <= 0:
        raise _fail(f"means must be [N, 3] with N ≥ 1, got {getattr(a.means, 'shape', None)}")
    c = len(a.channels)
    if c == 0 or len(set(a.channels)) != c:
        raise _fail("channel names must be a non-empty list without duplicates")
    _check("means", a.means, (n, 3))
    _check("quats", a.quats, (n, 4))
    _check("scales", a.scales, (n, 3))
    _check("opacities", a.opacities, (n,))
    _check("colors", a.colors, (n, 3))
    _check("layers", a.layers, (n,), "iu")
    _check("background", a.background, (3,))
    if np.any(np.linalg.norm(a.quats, axis=1) < 1e-6):
        raise _fail("quats contain a zero quaternion")
    if np.any(a.scales < 0):
        raise _fail("scales must be non-negative")
    if np.any(a.opacities <= 0) or np.any(a.opacities > 1):
        raise _fail("opacities must lie in (0, 1]")
    if np.any(a.colors < 0) or np.any(a.colors > 1):
        raise _fail("colors must lie in [0, 1]")
    if not set(np.unique(a.layers).tolist()) <= set(LAYER_NAMES):
        raise _fail(f"layers contain unknown codes (known: {sorted(LAYER_NAMES)})")
    r = a.rig
    _check("delta_offsets", r.delta_offsets, (c + 1,), "iu")
    m = r.delta_index.shape[0] if isinstance(r.delta_index, np.ndarray) else -1
    _check("delta_index", r.delta_index, (m,), "iu")
    _check("delta_means", r.delta_means, (m, 3))
    if r.delta_offsets[0] != 0 or r.delta_offsets[-1] != m or np.any(np.diff(r.delta_offsets) < 0):
        raise _fail("delta_offsets must rise from 0 to the number of delta rows")
    if m and (r.delta_index.min() < 0 or r.delta_index.max() >= n):
        raise _fail("delta_index points outside the Gaussians")
    for ci in range(c):
        idx, _ = r.channel_deltas(ci)
        if np.unique(idx).size != idx.size:
            raise _fail(f"channel {a.channels[ci]!r} lists a Gaussian twice")
    _check("head_pivot", r.head_pivot, (3,))
    _check("jaw_pivot", r.jaw_pivot, (3,))
    _check("jaw_axis", r.jaw_axis, (3,))
    if abs(float(np.linalg.norm(r.jaw_axis)) - 1.0) > 1e-3:
        raise _fail("jaw_axis must be a unit vector")
    _check("jaw_angle", r.jaw_angle, (c,))
    _check("jaw_translation", r.jaw_translation, (c, 3))
    cam = a.camera
    values = (cam.fx, cam.fy, cam.cx, cam.cy)
    if not all(math.isfinite(v) for v in values) or cam.fx <= 0 or cam.fy <= 0:
        raise _fail(f"camera intrinsics must be finite with positive focal lengths, got {cam}")
    if cam.width <= 0 or cam.height <= 0:
        raise _fail(f"camera image size must be positive, got {cam.width}x{cam.height}")
    for k, lod in enumerate(a.lods, start=1):
        kk = lod.index.shape[0] if isinstance(lod.index, np.ndarray) else -1
        _check(f"lod{k}.index", lod.index, (kk,), "iu")
        _check(f"lod{k}.scales", lod.scales, (kk, 3))
        _check(f"lod{k}.opacities", lod.opacities, (kk,))
        _check(f"lod{k}.colors", lod.colors, (kk, 3))
        if kk and (lod.index.min() < 0 or lod.index.max() >= n):
            raise _fail(f"lod{k}.index points outside the Gaussians")


# --------------------------------------------------------------------------- save / load

# tensor name → storage dtype (float16 where the precision is ample: see save_avatar)
_STORAGE: dict[str, Any] = {
    "means": np.float32,
    "quats": np.float16,
    "scales": np.float16,
    "opacities": np.float16,
    "colors": np.float16,
    "layers": np.int8,
    "background": np.float32,
    "rig.delta_offsets": np.int64,
    "rig.delta_index": np.int32,
    "rig.delta_means": np.float16,
    "rig.head_pivot": np.float32,
    "rig.jaw_pivot": np.float32,
    "rig.jaw_axis": np.float32,
    "rig.jaw_angle": np.float32,
    "rig.jaw_translation": np.float32,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_avatar(avatar: Avatar, path: str | Path) -> Path:
    """Write ``avatar`` to ``path`` (safetensors). Means stay float32 (sub-pixel
    precision at metre depths); appearance and deltas are stored as float16."""
    from safetensors.numpy import save_file

    avatar.validate()
    r = avatar.rig
    tensors: dict[str, np.ndarray] = {
        "means": avatar.means,
        "quats": avatar.quats,
        "scales": avatar.scales,
        "opacities": avatar.opacities,
        "colors": avatar.colors,
        "layers": avatar.layers,
        "background": avatar.background,
        "rig.delta_offsets": r.delta_offsets,
        "rig.delta_index": r.delta_index,
        "rig.delta_means": r.delta_means,
        "rig.head_pivot": r.head_pivot,
        "rig.jaw_pivot": r.jaw_pivot,
        "rig.jaw_axis": r.jaw_axis,
        "rig.jaw_angle": r.jaw_angle,
        "rig.jaw_translation": r.jaw_translation,
    }
    out = {k: np.ascontiguousarray(v, dtype=_STORAGE[k]) for k, v in tensors.items()}
    for k, lod in enumerate(avatar.lods, start=1):
        out[f"lod{k}.index"] = np.ascontiguousarray(lod.index, dtype=np.int32)
        out[f"lod{k}.scales"] = np.ascontiguousarray(lod.scales, dtype=np.float16)
        out[f"lod{k}.opacities"] = np.ascontiguousarray(lod.opacities, dtype=np.float16)
        out[f"lod{k}.colors"] = np.ascontiguousarray(lod.colors, dtype=np.float16)
    cam = avatar.camera
    meta = dict(_jsonable(avatar.metadata))
    meta.update(
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "channels": list(avatar.channels),
            "camera": {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy},
            "image_size": [cam.height, cam.width],
            "layer_names": {str(k): v for k, v in LAYER_NAMES.items()},
            "lod_levels": len(avatar.lods),
            "gaussians": avatar.count,
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    logger.info("avatar: saved %d Gaussians to %s (%d bytes)", avatar.count, path, path.stat().st_size)
    return path


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors JSON header ourselves first, so that any non-safetensors
    file (a pickle, a truncated download) fails with a clear message before decoding."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AvatarFormatError(f"{path}: not a safetensors file (only {size} bytes)")
        n = int.from_bytes(head, "little")
        if n <= 1 or n > min(size - 8, 100_000_000):
            raise AvatarFormatError(f"{path}: not a safetensors file (bad header length {n})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AvatarFormatError(f"{path}: not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise AvatarFormatError(f"{path}: not a safetensors file (header is not an object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise AvatarFormatError(f"{path}: malformed safetensors entry {name!r}") from None
    if 8 + n + end > size:
        raise AvatarFormatError(
            f"{path}: file is truncated ({size} bytes, the header promises {8 + n + end}); re-create or re-download it"
        )
    return header


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32) if x.dtype.kind == "f" else x


def load_avatar(path: str | Path) -> Avatar:
    """Read and validate an avatar file; raises :class:`AvatarFormatError` on anything wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise AvatarFormatError(f"{path}: no such avatar file")
    header = _read_header(path)
    meta_raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if meta_raw is None:
        raise AvatarFormatError(f"{path}: safetensors file without splatcast avatar metadata")
    try:
        meta = json.loads(meta_raw)
    except json.JSONDecodeError as exc:
        raise AvatarFormatError(f"{path}: avatar metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise AvatarFormatError(f"{path}: not a splatcast avatar (format {meta.get('format')!r})")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise AvatarFormatError(
            f"{path}: avatar format version {version!r} is not supported (this splatcast reads "
            f"version {FORMAT_VERSION}); re-create the avatar with this version"
        )
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AvatarFormatError(f"{path}: cannot decode tensors ({exc})") from None
    missing = [k for k in _STORAGE if k not in t]
    if missing:
        raise AvatarFormatError(f"{path}: missing tensors {missing}")
    try:
        channels = tuple(str(c) for c in meta["channels"])
        cm = meta["camera"]
        h, w = (int(v) for v in meta["image_size"])
        camera = Camera(
            fx=float(cm["fx"]), fy=float(cm["fy"]), cx=float(cm["cx"]), cy=float(cm["cy"]), width=w, height=h
        )
        n_lods = int(meta.get("lod_levels", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise AvatarFormatError(f"{path}: malformed avatar metadata ({exc!r})") from None
    lods = []
    for k in range(1, n_lods + 1):
        try:
            lods.append(
                LodLevel(
                    index=t[f"lod{k}.index"],
                    scales=_f32(t[f"lod{k}.scales"]),
                    opacities=_f32(t[f"lod{k}.opacities"]),
                    colors=_f32(t[f"lod{k}.colors"]),
                )
            )
        except KeyError as exc:
            raise AvatarFormatError(f"{path}: missing LOD tensor {exc}") from None
    quats = _f32(t["quats"])
    norms = np.linalg.norm(quats, axis=1, keepdims=True) if quats.ndim == 2 else 1.0
    avatar = Avatar(
        means=_f32(t["means"]),
        quats=quats / np.where(norms > 1e-6, norms, 1.0).astype(np.float32) if quats.ndim == 2 else quats,
        scales=_f32(t["scales"]),
        opacities=np.clip(_f32(t["opacities"]), 0.0, 1.0)
        if t["opacities"].dtype.kind == "f"
        else t["opacities"],
        colors=_f32(t["colors"]),
        layers=t["layers"],
        rig=Rig(
            delta_offsets=t["rig.delta_offsets"],
            delta_index=t["rig.delta_index"],
            delta_means=_f32(t["rig.delta_means"]),
            head_pivot=_f32(t["rig.head_pivot"]),
            jaw_pivot=_f32(t["rig.jaw_pivot"]),
            jaw_axis=_f32(t["rig.jaw_axis"]),
            jaw_angle=_f32(t["rig.jaw_angle"]),
            jaw_translation=_f32(t["rig.jaw_translation"]),
        ),
        channels=channels,
        camera=camera,
        background=_f32(t["background"]),
        metadata=meta,
        lods=lods,
    )
    if quats.ndim == 2 and np.any(np.linalg.norm(t["quats"].astype(np.float32), axis=1) < 1e-6):
        raise _fail(f"{path}: quats contain a zero quaternion")
    try:
        avatar.validate()
    except AvatarFormatError as exc:
        raise AvatarFormatError(f"{path}: {exc}") from None
    logger.debug("avatar: loaded %s (%d Gaussians, %d channels)", path, avatar.count, len(channels))
    return avatar
