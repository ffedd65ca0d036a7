"""Pose an avatar: rig parameters → Gaussians in camera space.

Order of operations for each frame ``b`` (``params[b]`` is float32 [C]):

1. linear blendshape deltas: ``means += Σ_c params[b, c] · delta_c`` (sparse per channel);
2. rigid jaw: Gaussians of :data:`~engines.splat.avatar.LAYER_JAW` rotate about
   the hinge (``jaw_pivot``, ``jaw_axis``) by ``params[b] @ jaw_angle`` radians and
   then translate by ``params[b] @ jaw_translation``;
3. rigid head pose: every layer except :data:`~engines.splat.avatar.LAYER_STATIC`
   rotates about ``head_pivot`` by R = Rz(roll) · Ry(yaw) · Rx(pitch) (radians;
   positive pitch tips the face down, positive yaw turns the face towards the
   image's right, positive roll tilts it clockwise in the image);
4. level of detail ``lod ≥ 1`` keeps ``avatar.lods[lod - 1].index`` with that
   level's scales, opacities and colours.

Eye gaze (``eyeGazeX``/``eyeGazeY`` and the ``eyeLook*`` channels) is carried
by the linear deltas of step 1 on the eye layer.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from engines.splat.avatar import LAYER_JAW, LAYER_STATIC, Avatar
from engines.splat.types import PosedGaussians


class RigError(ValueError):
    """Rig parameters do not fit the avatar."""


def axis_angle_matrix(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices [B, 3, 3] about unit ``axis`` [3] by ``angle`` [B] radians (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    a = np.asarray(angle, dtype=np.float64)[:, None, None]
    return (np.eye(3) + np.sin(a) * kx + (1.0 - np.cos(a)) * (kx @ kx)).astype(np.float32)


def euler_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """R = Rz(roll) · Ry(yaw) · Rx(pitch), each [B] radians → [B, 3, 3] (camera axes: x right, y down, z forward)."""
    b = np.asarray(pitch).shape[0]
    rx = axis_angle_matrix(np.array([1.0, 0.0, 0.0]), np.asarray(pitch))
    ry = axis_angle_matrix(np.array([0.0, 1.0, 0.0]), -np.asarray(yaw))
    rz = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), np.asarray(roll))
    return (rz @ ry @ rx).reshape(b, 3, 3)


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) [B, 4] of rotation matrices [B, 3, 3]."""
    r = np.asarray(r, dtype=np.float64)
    tr = np.trace(r, axis1=1, axis2=2)
    w = np.sqrt(np.maximum(0.0, 1.0 + tr)) / 2.0
    x = np.sqrt(np.maximum(0.0, 1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2])) / 2.0
    y = np.sqrt(np.maximum(0.0, 1.0 - r[:, 0, 0] + r[:, 1, 1] - r[:, 2, 2])) / 2.0
    z = np.sqrt(np.maximum(0.0, 1.0 - r[:, 0, 0] - r[:, 1, 1] + r[:, 2, 2])) / 2.0
    x = np.copysign(x, r[:, 2, 1] - r[:, 1, 2])
    y = np.copysign(y, r[:, 0, 2] - r[:, 2, 0])
    z = np.copysign(z, r[:, 1, 0] - r[:, 0, 1])
    q = np.stack([w, x, y, z], axis=1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _cross_matrices(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kx, kx @ kx) float64 [3, 3] of ``axis``, as :func:`axis_angle_matrix` makes them."""
    k = np.asarray(axis, dtype=np.float64)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return kx, kx @ kx


@numba.njit(cache=True, nogil=True)
def _axis_angle_into(
    kx: np.ndarray,  # [3, 3] float64, from _cross_matrices
    kk: np.ndarray,  # [3, 3] float64
    angle: np.ndarray,  # [B] float64
    out: np.ndarray,  # [B, 3, 3] float32 out
) -> None:
    """:func:`axis_angle_matrix` (the same float64 operations in the same order, so the same bits)."""
    for b in range(angle.shape[0]):
        s = math.sin(angle[b])
        c = 1.0 - math.cos(angle[b])
        for i in range(3):
            for j in range(3):
                out[b, i, j] = np.float32(((1.0 if i == j else 0.0) + s * kx[i, j]) + c * kk[i, j])


@numba.njit(cache=True, nogil=True)
def _quats_into(rot: np.ndarray, q: np.ndarray) -> None:
    """:func:`matrix_to_quat` of float32 ``rot`` [B, 3, 3] into float32 ``q`` [B, 4] (same operations)."""
    for b in range(rot.shape[0]):
        r00, r01, r02 = np.float64(rot[b, 0, 0]), np.float64(rot[b, 0, 1]), np.float64(rot[b, 0, 2])
        r10, r11, r12 = np.float64(rot[b, 1, 0]), np.float64(rot[b, 1, 1]), np.float64(rot[b, 1, 2])
        r20, r21, r22 = np.float64(rot[b, 2, 0]), np.float64(rot[b, 2, 1]), np.float64(rot[b, 2, 2])
        w = math.sqrt(max(0.0, 1.0 + ((r00 + r11) + r22))) / 2.0
        x = math.copysign(math.sqrt(max(0.0, 1.0 + r00 - r11 - r22)) / 2.0, r21 - r12)
        y = math.copysign(math.sqrt(max(0.0, 1.0 - r00 + r11 - r22)) / 2.0, r02 - r20)
        z = math.copysign(math.sqrt(max(0.0, 1.0 - r00 - r11 + r22)) / 2.0, r10 - r01)
        norm = math.sqrt(((w * w + x * x) + y * y) + z * z)
        q[b, 0] = np.float32(w / norm)
        q[b, 1] = np.float32(x / norm)
        q[b, 2] = np.float32(y / norm)
        q[b, 3] = np.float32(z / norm)


def _quat_left_matrix(q: np.ndarray) -> np.ndarray:
    """[B, 4, 4] matrices L with L @ p = q ⊗ p for (w, x, y, z) quaternions q [B, 4]."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([w, -x, -y, -z], axis=-1),
            np.stack([x, w, -z, y], axis=-1),
            np.stack([y, z, w, -x], axis=-1),
            np.stack([z, -y, x, w], axis=-1),
        ],
        axis=1,
    ).astype(np.float32)


def _rows(layers: np.ndarray, sel: np.ndarray) -> slice | np.ndarray:
    """The selected rows as a slice when they are contiguous (avatars sorted by layer), else indices."""
    idx = np.flatnonzero(sel)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


@numba.njit(cache=True, nogil=True)
def _add_deltas(
    means: np.ndarray,  # [B, N, 3] float32, modified in place
    params: np.ndarray,  # [B, C] float32
    channels: np.ndarray,  # [A] int64, the channels to apply
    offsets: np.ndarray,  # [C + 1] int64, CSR row starts of each channel's deltas
    index: np.ndarray,  # [E] int32, Gaussian of each delta
    deltas: np.ndarray,  # [E, 3] float32
) -> None:
    """``means[b, index[e]] += params[b, c] · deltas[e]`` over the entries of each channel in ``channels``."""
    for a in range(channels.shape[0]):
        c = channels[a]
        for e in range(offsets[c], offsets[c + 1]):
            k = index[e]
            for b in range(means.shape[0]):
                w = params[b, c]
                means[b, k, 0] += w * deltas[e, 0]
                means[b, k, 1] += w * deltas[e, 1]
                means[b, k, 2] += w * deltas[e, 2]


@numba.njit(cache=True, nogil=True)
def _rigid(
    means: np.ndarray,  # [B, N, 3] float32, modified in place on rows lo..hi-1
    quats: np.ndarray,  # [B, N, 4] float32, (w, x, y, z)
    lo: int,
    hi: int,
    rot: np.ndarray,  # [B, 3, 3] float32
    q: np.ndarray,  # [B, 4] float32, the quaternion of rot
    pivot: np.ndarray,  # [3] float32
    shift: np.ndarray,  # [B, 3] float32
) -> None:
    """x ← R (x − p) + p + t and q_k ← q ⊗ q_k on rows lo..hi-1 of every frame."""
    for b in range(means.shape[0]):
        qw, qx, qy, qz = q[b, 0], q[b, 1], q[b, 2], q[b, 3]
        for k in range(lo, hi):
            x = means[b, k, 0] - pivot[0]
            y = means[b, k, 1] - pivot[1]
            z = means[b, k, 2] - pivot[2]
            means[b, k, 0] = rot[b, 0, 0] * x + rot[b, 0, 1] * y + rot[b, 0, 2] * z + pivot[0] + shift[b, 0]
            means[b, k, 1] = rot[b, 1, 0] * x + rot[b, 1, 1] * y + rot[b, 1, 2] * z + pivot[1] + shift[b, 1]
            means[b, k, 2] = rot[b, 2, 0] * x + rot[b, 2, 1] * y + rot[b, 2, 2] * z + pivot[2] + shift[b, 2]
            pw, px, py, pz = quats[b, k, 0], quats[b, k, 1], quats[b, k, 2], quats[b, k, 3]
            quats[b, k, 0] = qw * pw - qx * px - qy * py - qz * pz
            quats[b, k, 1] = qw * px + qx * pw + qy * pz - qz * py
            quats[b, k, 2] = qw * py - qx * pz + qy * pw + qz * px
            quats[b, k, 3] = qw * pz + qx * py - qy * px + qz * pw


def _rotate(
    means: np.ndarray,  # [B, N, 3] (modified in place on the selected rows)
    quats: np.ndarray,  # [B, N, 4]
    sel: slice | np.ndarray,  # rows
    rot: np.ndarray,  # [B, 3, 3]
    pivot: np.ndarray,  # [3]
    translation: np.ndarray | None = None,  # [B, 3]
) -> None:
    b = means.shape[0]
    shift = np.zeros((b, 3), np.float32) if translation is None else np.asarray(translation, np.float32)
    rot = np.ascontiguousarray(rot, dtype=np.float32)
    q = matrix_to_quat(rot)
    pivot = np.asarray(pivot, np.float32)
    if isinstance(sel, slice):
        _rigid(means, quats, int(sel.start), int(sel.stop), rot, q, pivot, np.ascontiguousarray(shift))
        return
    # rows that are not one contiguous run (an avatar not sorted by layer): the same maths in numpy
    rot_t = np.swapaxes(rot, 1, 2)  # [B, 3, 3]
    means[:, sel] = (means[:, sel] - pivot) @ rot_t + pivot + shift[:, None, :]
    quats[:, sel] = quats[:, sel] @ np.swapaxes(_quat_left_matrix(q), 1, 2)


def pose(avatar: Avatar, params: np.ndarray, lod: int = 0) -> PosedGaussians:
    """Deform ``avatar`` by ``params`` (float32 [B, C]) → :class:`PosedGaussians` [B, N(lod), ...]."""
    params = np.asarray(params)
    c = len(avatar.channels)
    if params.ndim != 2 or params.shape[1] != c:
        raise RigError(f"params must be [B, {c}], got {list(params.shape)}")
    if not np.all(np.isfinite(params)):
        raise RigError("params contain NaN or infinite values")
    if not 0 <= lod <= len(avatar.lods):
        raise RigError(f"lod {lod} out of range: this avatar has levels 0..{len(avatar.lods)}")
    params = params.astype(np.float32, copy=False)
    b = params.shape[0]
    rig = avatar.rig
    means = np.repeat(avatar.means[None], b, axis=0)  # [B, N, 3]
    quats = np.repeat(avatar.quats[None], b, axis=0)  # [B, N, 4]

    # 1. sparse linear deltas, only for channels that are non-zero somewhere in the batch
    active = np.flatnonzero(np.any(params != 0.0, axis=0)).astype(np.int64)
    if active.size:
        _add_deltas(
            means,
            np.ascontiguousarray(params),
            active,
            np.asarray(rig.delta_offsets, np.int64),
            rig.delta_index,
            rig.delta_means,
        )

    # 2. rigid jaw
    angle = params @ rig.jaw_angle  # [B]
    shift = params @ rig.jaw_translation  # [B, 3]
    if np.any(angle != 0.0) or np.any(shift != 0.0):
        jaw = _rows(avatar.layers, avatar.layers == LAYER_JAW)
        _rotate(means, quats, jaw, axis_angle_matrix(rig.jaw_axis, angle), rig.jaw_pivot, shift)

    # 3. rigid head pose over the static layer
    names = avatar.channels
    pose_cols = [names.index(k) if k in names else -1 for k in ("headPitch", "headYaw", "headRoll")]
    angles = [params[:, i] if i >= 0 else np.zeros(b, dtype=np.float32) for i in pose_cols]
    if any(np.any(a != 0.0) for a in angles):
        moving = _rows(avatar.layers, avatar.layers != LAYER_STATIC)
        _rotate(means, quats, moving, euler_matrix(*angles), rig.head_pivot)

    if lod:
        index = avatar.lods[lod - 1].index
        means, quats = means[:, index], quats[:, index]
    return _posed(
        avatar, np.ascontiguousarray(means, np.float32), np.ascontiguousarray(quats, np.float32), lod
    )


def _posed(avatar: Avatar, means: np.ndarray, quats: np.ndarray, lod: int) -> PosedGaussians:
    """Posed ``means`` [B, K, 3] and ``quats`` [B, K, 4] with the appearance of ``lod`` (views when B = 1)."""
    b, k = means.shape[0], means.shape[1]
    if lod == 0:
        scales, opac, colors = avatar.scales, avatar.opacities, avatar.colors
    else:
        level = avatar.lods[lod - 1]
        scales, opac, colors = level.scales, level.opacities, level.colors
    return PosedGaussians(
        means=means,
        quats=quats,
        scales=np.ascontiguousarray(np.broadcast_to(scales[None], (b, k, 3)), dtype=np.float32),
        opacities=np.ascontiguousarray(np.broadcast_to(opac[None], (b, k)), dtype=np.float32),
        colors=np.ascontiguousarray(np.broadcast_to(colors[None], (b, k, 3)), dtype=np.float32),
    )


@numba.njit(cache=True, nogil=True, inline="always")
def _rigid_point(
    m0: float,
    m1: float,
    m2: float,
    pw: float,
    px: float,
    py: float,
    pz: float,
    rot: np.ndarray,  # [3, 3] float32
    q: np.ndarray,  # [4] float32, the quaternion of rot
    pivot: np.ndarray,  # [3] float32
    shift: np.ndarray,  # [3] float32
) -> tuple[float, float, float, float, float, float, float]:
    """One Gaussian of :func:`_rigid` (float32 in, float32 out: the same operations in the same order)."""
    x = m0 - pivot[0]
    y = m1 - pivot[1]
    z = m2 - pivot[2]
    qw, qx, qy, qz = q[0], q[1], q[2], q[3]
    return (
        rot[0, 0] * x + rot[0, 1] * y + rot[0, 2] * z + pivot[0] + shift[0],
        rot[1, 0] * x + rot[1, 1] * y + rot[1, 2] * z + pivot[1] + shift[1],
        rot[2, 0] * x + rot[2, 1] * y + rot[2, 2] * z + pivot[2] + shift[2],
        qw * pw - qx * px - qy * py - qz * pz,
        qw * px + qx * pw + qy * pz - qz * py,
        qw * py - qx * pz + qy * pw + qz * px,
        qw * pz + qx * py - qy * px + qz * pw,
    )


@numba.njit(cache=True, nogil=True)
def _pose_rows(
    rest_means: np.ndarray,  # [N, 3] float32
    rest_quats: np.ndarray,  # [N, 4] float32
    rows: np.ndarray,  # [K] int64, the Gaussian of each output row
    motion: np.ndarray,  # [N] uint8, bit 1: the rigid jaw moves it, bit 2: the head pose moves it
    row_starts: np.ndarray,  # [N + 1] int64, CSR over Gaussians of the deltas
    row_channel: np.ndarray,  # [E] uint8 (int32 past 256 channels), channel of each delta, ascending
    row_delta: np.ndarray,  # [E, 3] float32
    params: np.ndarray,  # [B, C] float32
    active: np.ndarray,  # [C] bool, the channels to apply
    jaw_kx: np.ndarray,  # [3, 3] float64, _cross_matrices of the jaw axis
    jaw_kk: np.ndarray,  # [3, 3] float64
    jaw_angle: np.ndarray,  # [B] float64, radians
    jaw_pivot: np.ndarray,  # [3] float32
    jaw_shift: np.ndarray,  # [B, 3] float32
    head_rot: np.ndarray,  # [B, 3, 3] float32 (unused when not head_on)
    head_pivot: np.ndarray,  # [3] float32
    head_shift: np.ndarray,  # [B, 3] float32 (zeros: pose() adds them too)
    jaw_on: bool,
    head_on: bool,
    means: np.ndarray,  # [B, K, 3] float32 out
    quats: np.ndarray,  # [B, K, 4] float32 out
) -> float:
    """:func:`pose`'s steps 1-4 fused per Gaussian, with the same float32 operations in the same order
    (so the same bits); returns the largest posed z (-inf when K = 0)."""
    nb = params.shape[0]
    jaw_rot = np.zeros((nb, 3, 3), np.float32)
    jaw_q = np.zeros((nb, 4), np.float32)
    head_q = np.zeros((nb, 4), np.float32)
    if jaw_on:
        _axis_angle_into(jaw_kx, jaw_kk, jaw_angle, jaw_rot)
        _quats_into(jaw_rot, jaw_q)
    if head_on:
        _quats_into(head_rot, head_q)
    zmax = -np.inf
    for b in range(params.shape[0]):
        for i in range(rows.shape[0]):
            k = rows[i]
            m0 = rest_means[k, 0]
            m1 = rest_means[k, 1]
            m2 = rest_means[k, 2]
            for e in range(row_starts[k], row_starts[k + 1]):
                c = row_channel[e]
                if active[c]:
                    w = params[b, c]
                    m0 += w * row_delta[e, 0]
                    m1 += w * row_delta[e, 1]
                    m2 += w * row_delta[e, 2]
            qa = rest_quats[k, 0]
            qb = rest_quats[k, 1]
            qc = rest_quats[k, 2]
            qd = rest_quats[k, 3]
            if jaw_on and motion[k] & 1:
                m0, m1, m2, qa, qb, qc, qd = _rigid_point(
                    m0, m1, m2, qa, qb, qc, qd, jaw_rot[b], jaw_q[b], jaw_pivot, jaw_shift[b]
                )
            if head_on and motion[k] & 2:
                m0, m1, m2, qa, qb, qc, qd = _rigid_point(
                    m0, m1, m2, qa, qb, qc, qd, head_rot[b], head_q[b], head_pivot, head_shift[b]
                )
            means[b, i, 0] = m0
            means[b, i, 1] = m1
            means[b, i, 2] = m2
            quats[b, i, 0] = qa
            quats[b, i, 1] = qb
            quats[b, i, 2] = qc
            quats[b, i, 3] = qd
            if m2 > zmax:
                zmax = m2
    return zmax


class Poser:
    """:func:`pose` for a stream of frames of one avatar: the same Gaussians (bit for bit), much cheaper.

    What :func:`pose` works out per call is laid out once here: the deltas as a CSR over Gaussians
    (each Gaussian's deltas in channel order, as :func:`pose` adds them), which rows the jaw and the
    head pose move, the rows of each level of detail. :meth:`pose_into` then poses each Gaussian in one
    pass (deltas, jaw, head, level of detail) straight into the caller's arrays, with no per-frame
    temporaries. :func:`pose`'s channel-major scatter over 26k Gaussians × 57 channels (193k deltas,
    the default avatar's moving part) was most of its ~1 ms per frame.

    The avatar's arrays are read when the Poser is made: a Poser does not follow later changes to them.
    """

    def __init__(self, avatar: Avatar) -> None:
        rig = avatar.rig
        n, c = avatar.count, len(avatar.channels)
        self.avatar = avatar
        channel = np.repeat(np.arange(c, dtype=np.int32), np.diff(rig.delta_offsets))
        by_row = np.argsort(rig.delta_index, kind="stable")  # stable: channel order kept within a row
        self._row_starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rig.delta_index, minlength=n), out=self._row_starts[1:])
        self._row_channel = channel[by_row].astype(np.uint8 if c <= 256 else np.int32)  # less to stream
        self._row_delta = np.ascontiguousarray(rig.delta_means[by_row], dtype=np.float32)
        self._motion = ((avatar.layers == LAYER_JAW) * 1 + (avatar.layers != LAYER_STATIC) * 2).astype(
            np.uint8
        )
        self._rows = [np.arange(n, dtype=np.int64)] + [level.index.astype(np.int64) for level in avatar.lods]
        self._rest_means = np.ascontiguousarray(avatar.means, dtype=np.float32)
        self._rest_quats = np.ascontiguousarray(avatar.quats, dtype=np.float32)
        self._jaw_pivot = np.asarray(rig.jaw_pivot, np.float32)
        self._head_pivot = np.asarray(rig.head_pivot, np.float32)
        self._jaw_kx, self._jaw_kk = _cross_matrices(rig.jaw_axis)
        crosses = [_cross_matrices(np.eye(3)[j]) for j in range(3)]  # the axes of Rx, Ry, Rz
        self._head_kx = np.stack([kx for kx, _ in crosses])
        self._head_kk = np.stack([kk for _, kk in crosses])
        # the head's rotations are made from Python only when a frame turns the head: compile (or load
        # from numba's cache) that entry now, with the renderer, not in the first such frame of a call
        _axis_angle_into(self._head_kx[0], self._head_kk[0], np.zeros(1), np.empty((1, 3, 3), np.float32))
        self._head_cols = [
            avatar.channels.index(k) if k in avatar.channels else -1
            for k in ("headPitch", "headYaw", "headRoll")
        ]

    def count(self, lod: int = 0) -> int:
        """Gaussians posed at ``lod``."""
        return int(self._rows[lod].shape[0])

    def pose_into(
        self,
        params: np.ndarray,  # [B, C] float32, checked (finite, one column per channel)
        lod: int,  # checked: 0..len(avatar.lods)
        means: np.ndarray,  # [B, K, 3] float32 out, C-contiguous (K = count(lod))
        quats: np.ndarray,  # [B, K, 4] float32 out, C-contiguous
    ) -> float:
        """Write :func:`pose`'s means and quats of ``params`` into ``means`` and ``quats``; returns their
        largest z (-inf when K = 0)."""
        rig = self.avatar.rig
        b = params.shape[0]
        params = params.astype(np.float32, copy=False)
        active = np.any(params != 0.0, axis=0)
        angle = params @ rig.jaw_angle  # [B]; as pose() does it, before any copy (a matmul's rounding
        shift = np.ascontiguousarray(params @ rig.jaw_translation, dtype=np.float32)  # may follow strides)
        jaw_on = bool(np.any(angle != 0.0) or np.any(shift != 0.0))
        head = np.zeros((3, b), np.float64)  # pitch, -yaw, roll: the angles of Rx, Ry, Rz in euler_matrix
        for j, col in enumerate(self._head_cols):
            if col >= 0:
                head[j] = params[:, col]
        head[1] = -head[1]
        head_on = bool(np.any(head != 0.0))
        if head_on:
            parts = np.empty((3, b, 3, 3), np.float32)
            for j in range(3):
                _axis_angle_into(self._head_kx[j], self._head_kk[j], head[j], parts[j])
            head_rot = np.ascontiguousarray(
                (parts[2] @ parts[1] @ parts[0]).reshape(b, 3, 3)
            )  # as euler_matrix
        else:
            head_rot = np.zeros((b, 3, 3), np.float32)
        return float(
            _pose_rows(
                self._rest_means,
                self._rest_quats,
                self._rows[lod],
                self._motion,
                self._row_starts,
                self._row_channel,
                self._row_delta,
                np.ascontiguousarray(params),
                active,
                self._jaw_kx,
                self._jaw_kk,
                angle.astype(np.float64),
                self._jaw_pivot,
                shift,
                head_rot,
                self._head_pivot,
                np.zeros((b, 3), np.float32),
                jaw_on,
                head_on,
                means,
                quats,
            )
        )

    def pose(self, params: np.ndarray, lod: int = 0) -> PosedGaussians:
        """:func:`pose` of checked ``params`` into new arrays."""
        b, k = params.shape[0], self.count(lod)
        means = np.empty((b, k, 3), np.float32)
        quats = np.empty((b, k, 4), np.float32)
        self.pose_into(params, lod, means, quats)
        return self.posed(means, quats, lod)

    def posed(self, means: np.ndarray, quats: np.ndarray, lod: int) -> PosedGaussians:
        """:class:`PosedGaussians` of ``means`` and ``quats`` from :meth:`pose_into` with the appearance of
        ``lod`` (views of the avatar's arrays for one frame)."""
        return _posed(self.avatar, means, quats, lod)
