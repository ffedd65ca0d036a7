"""Rig behaviour: identity at neutral, linear deltas, rigid jaw on the jaw layer only, head pose over a static layer."""

from __future__ import annotations

import numpy as np
import pytest

from engines.splat.avatar import LAYER_HEAD, LAYER_JAW, LAYER_MOUTH, LAYER_STATIC, Avatar, LodLevel
from engines.splat.rig import RigError, axis_angle_matrix, pose
from engines.splat.synthetic import make_test_avatar


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return make_test_avatar(2000, seed=1)


def test_neutral_is_identity(avatar: Avatar) -> None:
    g = pose(avatar, avatar.neutral(2))
    assert g.means.shape == (2, avatar.count, 3)
    np.testing.assert_array_equal(g.means[0], avatar.means)
    np.testing.assert_array_equal(g.means[1], avatar.means)
    np.testing.assert_array_equal(g.quats[0], avatar.quats)
    np.testing.assert_array_equal(g.colors[1], avatar.colors)
    g.validate()


@pytest.mark.parametrize(
    "channel", ["mouthPressLeft", "mouthFunnel", "eyeBlinkRight", "browInnerUp", "eyeGazeX"]
)
def test_deltas_are_linear_and_additive(avatar: Avatar, channel: str) -> None:
    base = avatar.means.astype(np.float64)
    one = pose(avatar, avatar.params({channel: 1.0})).means[0] - base
    half = pose(avatar, avatar.params({channel: 0.5})).means[0] - base
    neg = pose(avatar, avatar.params({channel: -0.7})).means[0] - base
    assert np.abs(one).max() > 1e-4, f"{channel} moves nothing"
    np.testing.assert_allclose(half, 0.5 * one, atol=1e-6)
    np.testing.assert_allclose(neg, -0.7 * one, atol=1e-6)
    both = pose(avatar, avatar.params({channel: 1.0, "cheekPuff": 1.0})).means[0] - base
    puff = pose(avatar, avatar.params({"cheekPuff": 1.0})).means[0] - base
    np.testing.assert_allclose(both, one + puff, atol=1e-6)


def test_jaw_rotates_only_the_jaw_layer(avatar: Avatar) -> None:
    value = 0.6
    g = pose(avatar, avatar.params({"jawOpen": value})).means[0].astype(np.float64)
    rig = avatar.rig
    angle = value * float(rig.jaw_angle[avatar.channel_index("jawOpen")])
    assert angle > 0.1
    rot = axis_angle_matrix(rig.jaw_axis, np.array([angle]))[0].astype(np.float64)
    jaw = avatar.layers == LAYER_JAW
    expected = (avatar.means[jaw] - rig.jaw_pivot) @ rot.T + rig.jaw_pivot
    np.testing.assert_allclose(g[jaw], expected, atol=1e-6)
    # the jaw moves down (+y) in the image
    assert (g[jaw, 1] - avatar.means[jaw, 1]).mean() > 0
    for layer in (LAYER_STATIC, LAYER_MOUTH):
        sel = avatar.layers == layer
        np.testing.assert_array_equal(g[sel], avatar.means[sel])
    # the head layer moves only through jawOpen's linear deltas (lower lip and chin)
    idx, delta = rig.channel_deltas(avatar.channel_index("jawOpen"))
    head = np.flatnonzero(avatar.layers == LAYER_HEAD)
    expected_head = avatar.means.astype(np.float64).copy()
    expected_head[idx] += value * delta
    np.testing.assert_allclose(g[head], expected_head[head], atol=1e-6)
    assert np.isin(idx, head).all()


def test_head_pose_is_rigid_and_leaves_static_layer(avatar: Avatar) -> None:
    params = avatar.params({"headYaw": 0.26, "headPitch": -0.17, "headRoll": 0.05, "jawOpen": 0.3})
    jaw_only = pose(avatar, avatar.params({"jawOpen": 0.3})).means[0].astype(np.float64)
    g = pose(avatar, params)
    posed = g.means[0].astype(np.float64)
    static = avatar.layers == LAYER_STATIC
    np.testing.assert_array_equal(posed[static], avatar.means[static])
    moving = np.flatnonzero(~static)
    sample = moving[:: max(1, len(moving) // 300)]
    d0 = np.linalg.norm(jaw_only[sample, None] - jaw_only[None, sample], axis=-1)
    d1 = np.linalg.norm(posed[sample, None] - posed[None, sample], axis=-1)
    np.testing.assert_allclose(d1, d0, atol=1e-5)  # rigid: distances kept
    assert np.abs(posed[moving] - jaw_only[moving]).max() > 0.01
    # the Gaussians' orientations turn with the head: a disc normal follows the rotation
    assert not np.allclose(g.quats[0, moving], avatar.quats[moving], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(g.quats[0], axis=1), 1.0, atol=1e-5)


def test_positive_yaw_turns_the_face_to_the_image_right(avatar: Avatar) -> None:
    g = pose(avatar, avatar.params({"headYaw": 0.2}))
    nose = avatar.metadata["landmark_gaussians"]["inner_lip_upper"]  # front-most features move right
    assert (g.means[0, nose, 0] - avatar.means[nose, 0]).mean() > 0


def test_bad_params_raise(avatar: Avatar) -> None:
    with pytest.raises(RigError):
        pose(avatar, np.zeros((1, len(avatar.channels) - 1), np.float32))
    p = avatar.neutral(1)
    p[0, 0] = np.nan
    with pytest.raises(RigError):
        pose(avatar, p)
    with pytest.raises(RigError):
        pose(avatar, avatar.neutral(1), lod=1)


def test_lod_selects_subset_with_its_appearance(avatar: Avatar) -> None:
    idx = np.arange(0, avatar.count, 3, dtype=np.int32)
    lod = LodLevel(
        idx, avatar.scales[idx] * 2, avatar.opacities[idx] * 0.5, avatar.colors[idx][:, ::-1].copy()
    )
    avatar.lods = [lod]
    try:
        params = avatar.params({"jawOpen": 0.4, "headYaw": 0.1})
        full = pose(avatar, params)
        small = pose(avatar, params, lod=1)
    finally:
        avatar.lods = []
    np.testing.assert_array_equal(small.means[0], full.means[0, idx])
    np.testing.assert_array_equal(small.scales[0], lod.scales)
    np.testing.assert_array_equal(small.colors[0], lod.colors)


def test_closing_channels_seal_the_lips(avatar: Avatar) -> None:
    from engines.splat.measure import lip_aperture_px

    neutral = lip_aperture_px(avatar, avatar.neutral(1))[0]
    closed = lip_aperture_px(avatar, avatar.params({"mouthPressLeft": 1.0, "mouthPressRight": 1.0}))[0]
    opened = lip_aperture_px(avatar, avatar.params({"jawOpen": 0.6}))[0]
    assert neutral > 2.0  # the synthetic face has its lips apart
    assert closed <= 0.0
    assert opened > neutral + 5.0


def test_sorting_by_layer_keeps_the_pose(avatar: Avatar) -> None:
    from engines.splat.avatar import sort_by_layer

    shuffled_order = np.random.default_rng(0).permutation(avatar.count)
    inv = np.empty_like(shuffled_order)
    inv[shuffled_order] = np.arange(avatar.count)
    shuffled = sort_by_layer(avatar)  # already sorted: a no-op permutation must also work
    params = avatar.params({"jawOpen": 0.5, "mouthFunnel": 0.4, "headYaw": 0.2, "eyeGazeX": 0.5})
    np.testing.assert_allclose(pose(shuffled, params).means, pose(avatar, params).means, atol=1e-6)
    # a genuinely reordered avatar sorts back into contiguous layers and poses identically
    from engines.splat.avatar import Rig

    r = avatar.rig
    mixed = Avatar(
        **{
            **avatar.__dict__,
            **{
                k: getattr(avatar, k)[shuffled_order]
                for k in ("means", "quats", "scales", "opacities", "colors", "layers")
            },
            "rig": Rig(**{**r.__dict__, "delta_index": inv[r.delta_index].astype(np.int32)}),
            "metadata": {
                **avatar.metadata,
                "landmark_gaussians": {
                    k: inv[np.asarray(v)].tolist() for k, v in avatar.metadata["landmark_gaussians"].items()
                },
            },
        }
    )
    back = sort_by_layer(mixed)
    codes = back.layers.tolist()
    assert codes.index(LAYER_STATIC) == len(codes) - codes[::-1].index(LAYER_STATIC) - codes.count(
        LAYER_STATIC
    )
    assert all(c == LAYER_STATIC for c in codes[codes.index(LAYER_STATIC) :])
    posed_mixed = pose(mixed, params).means[0]
    posed_back = pose(back, params).means[0]
    np.testing.assert_allclose(np.sort(posed_back, axis=0), np.sort(posed_mixed, axis=0), atol=1e-6)
    up = back.metadata["landmark_gaussians"]["inner_lip_upper"]
    up_mixed = mixed.metadata["landmark_gaussians"]["inner_lip_upper"]
    np.testing.assert_allclose(posed_back[up], posed_mixed[up_mixed], atol=1e-6)


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """[K, 3, 3] rotation matrices of unit (w, x, y, z) quaternions [K, 4]."""
    w, x, y, z = (q[:, i].astype(np.float64) for i in range(4))
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


def test_head_pose_turns_each_gaussian_by_the_head_rotation(avatar: Avatar) -> None:
    """Posed orientation = R_head · R(q_rest) for every moving Gaussian, in every frame of a batch."""
    from engines.splat.rig import euler_matrix

    angles = np.array([[0.2, -0.1, 0.05], [-0.15, 0.3, -0.1], [0.0, 0.0, 0.0]], np.float32)
    params = np.concatenate(
        [
            avatar.params({"headPitch": float(p), "headYaw": float(y), "headRoll": float(r)})
            for p, y, r in angles
        ]
    )
    g = pose(avatar, params)
    moving = np.flatnonzero((avatar.layers != LAYER_STATIC) & (avatar.layers != LAYER_JAW))
    rest = _quat_matrix(avatar.quats[moving])
    for b, (p, y, r) in enumerate(angles):
        head = euler_matrix(np.array([p]), np.array([y]), np.array([r]))[0].astype(np.float64)
        np.testing.assert_allclose(_quat_matrix(g.quats[b, moving]), head @ rest, atol=2e-5)
        pivot = avatar.rig.head_pivot.astype(np.float64)
        expected = (avatar.means[moving] - pivot) @ head.T + pivot
        np.testing.assert_allclose(g.means[b, moving], expected, atol=2e-6)


@pytest.mark.parametrize("shuffled", [False, True])
def test_poser_poses_as_pose_does_bit_for_bit(avatar: Avatar, shuffled: bool) -> None:
    """Poser (the Renderer's fused per-Gaussian kernel) against pose(): the same float32 bits for every
    kind of frame: neutral, deltas only, jaw, head, all at once, mixed batches, every level of detail.
    Shuffled (layers not contiguous: pose() rotates those rows with a numpy matmul, which rounds
    differently), the Poser gives the bits of the sorted avatar's pose(), row for row."""
    import dataclasses

    from engines.splat.rig import Poser

    perm = np.random.default_rng(3).permutation(avatar.count) if shuffled else np.arange(avatar.count)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)  # row perm[i] of the avatar is row i of the subject
    idx = np.arange(1, avatar.count, 4, dtype=np.int32)
    level = LodLevel(idx, avatar.scales[idx] * 2, avatar.opacities[idx] * 0.5, avatar.colors[idx] * 0.9)
    subject = dataclasses.replace(
        avatar,
        **{
            k: getattr(avatar, k)[perm] for k in ("means", "quats", "scales", "opacities", "colors", "layers")
        },
        rig=dataclasses.replace(avatar.rig, delta_index=inv[avatar.rig.delta_index].astype(np.int32)),
        lods=[dataclasses.replace(level, index=inv[idx].astype(np.int32))],
    )
    poser = Poser(subject)
    c = len(subject.channels)
    head = [subject.channel_index(k) for k in ("headPitch", "headYaw", "headRoll")]
    rigid_jaw = np.flatnonzero(
        (subject.rig.jaw_angle != 0) | (np.abs(subject.rig.jaw_translation).sum(1) != 0)
    )
    rng = np.random.default_rng(7)
    full = rng.normal(0.0, 0.3, (3, c)).astype(np.float32)
    deltas_only = full.copy()
    deltas_only[:, head] = 0.0
    deltas_only[:, rigid_jaw] = 0.0
    cases = {
        "neutral": subject.neutral(2),
        "deltas only": deltas_only,
        "jaw": subject.params({"jawOpen": 0.5}),
        "head": subject.params({"headYaw": 0.2, "headRoll": -0.1}),
        "all": full,
        "sparse batch": full * (rng.random((3, c)) < 0.2),  # channels and moves only some frames use
        "one frame": full[1:2],
        "strided": np.repeat(full, 2, axis=1)[:, ::2],  # a non-contiguous view (numpy's matmul follows it)
    }
    assert not cases["strided"].flags.c_contiguous
    assert poser.count(0) == avatar.count and poser.count(1) == idx.size
    lod_rows = [np.arange(avatar.count), idx]
    for name, params in cases.items():
        full_pose = pose(avatar, params)
        for lod in (0, 1):
            expected = pose(subject, params, lod=lod)
            got = poser.pose(params, lod=lod)
            for field in ("scales", "opacities", "colors"):
                assert getattr(got, field).tobytes() == getattr(expected, field).tobytes(), (name, lod)
            means = np.full((params.shape[0], poser.count(lod), 3), np.nan, np.float32)
            quats = np.full((params.shape[0], poser.count(lod), 4), np.nan, np.float32)
            zmax = poser.pose_into(params, lod, means, quats)
            # the sorted avatar's pose(), in the subject's row order
            want_means = full_pose.means[:, lod_rows[lod]] if not shuffled else full_pose.means[:, perm]
            want_quats = full_pose.quats[:, lod_rows[lod]] if not shuffled else full_pose.quats[:, perm]
            if shuffled and lod:
                want_means, want_quats = want_means[:, inv[idx]], want_quats[:, inv[idx]]
            for arr in (got.means, means):
                assert arr.tobytes() == want_means.tobytes(), f"{name}, lod {lod}: means differ"
            for arr in (got.quats, quats):
                assert arr.tobytes() == want_quats.tobytes(), f"{name}, lod {lod}: quats differ"
            np.testing.assert_allclose(got.means, expected.means, atol=1e-6)
            np.testing.assert_allclose(got.quats, expected.quats, atol=1e-6)
            if not shuffled:
                assert got.means.tobytes() == expected.means.tobytes(), (name, lod)
                assert got.quats.tobytes() == expected.quats.tobytes(), (name, lod)
            assert zmax == float(want_means[..., 2].max()), (name, lod)
    assert not np.array_equal(pose(subject, full).means, pose(subject, deltas_only).means)


def test_poser_rotations_are_the_numpy_ones_bit_for_bit() -> None:
    """The Poser's numba ports of axis_angle_matrix and matrix_to_quat give numpy's bits (pose() uses
    numpy's), over random axes and angles."""
    from engines.splat.rig import _axis_angle_into, _cross_matrices, _quats_into, euler_matrix, matrix_to_quat

    rng = np.random.default_rng(5)
    for _ in range(5):
        axis = rng.normal(size=3)
        axis = (axis / np.linalg.norm(axis)).astype(np.float32)
        angle = rng.normal(0.0, 0.5, 500).astype(np.float32)
        kx, kk = _cross_matrices(axis)
        rot = np.empty((angle.size, 3, 3), np.float32)
        _axis_angle_into(kx, kk, angle.astype(np.float64), rot)
        assert rot.tobytes() == axis_angle_matrix(axis, angle).tobytes()
        head = euler_matrix(*rng.normal(0.0, 0.3, (3, 500)).astype(np.float32))
        for r in (rot, head):
            q = np.empty((r.shape[0], 4), np.float32)
            _quats_into(r, q)
            assert q.tobytes() == matrix_to_quat(r).tobytes()
