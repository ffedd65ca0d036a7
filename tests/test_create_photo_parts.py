"""Parts of the photo pipeline that need no face model: disc orientation and stretch, the crop's outside."""

from __future__ import annotations

import numpy as np

from engines.create.layers import disc_quats, disc_scales
from engines.create.photo import crop_inside, soften_outside
from engines.splat.raster_reference import quat_to_rotmat


def test_stretched_disc_lies_along_its_axis() -> None:
    """A disc's local x axis goes along the given in-plane direction, z along its normal; scale x is stretched."""
    normals = np.array([[0.0, 0.0, -1.0], [0.0, -0.6, -0.8], [0.3, 0.0, -1.0]])
    axes = np.array([[1.0, 1.0, 0.0], [0.0, 0.8, -0.6], [0.0, 0.0, 0.0]])  # the last: no direction
    rot = quat_to_rotmat(disc_quats(normals, axes).astype(np.float64))
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    assert np.allclose(rot[:, :, 2], n, atol=1e-5)
    assert np.allclose(rot[:2, :, 0], [[2**-0.5, 2**-0.5, 0.0], [0.0, 0.8, -0.6]], atol=1e-5)
    assert np.allclose(rot[2], quat_to_rotmat(disc_quats(normals[2:]).astype(np.float64))[0], atol=1e-6)
    scales = disc_scales(np.array([1.0, 2.0]), stretch=np.array([3.0, 1.0]))
    assert np.allclose(scales, [[3.0, 1.0, 0.25], [2.0, 2.0, 0.5]])


def test_outside_the_picture_is_softened_without_stripes() -> None:
    """A crop running past the picture's bottom: the repeated edge row (vertical stripes) is blurred
    there, more with the distance, and nothing inside the picture changes."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    box = (0.0, 0.0, 80.0)  # 80 px square from the top-left: its last 20 rows lie below the picture
    inside = crop_inside(box, image.shape, 80)
    assert inside[:60].all() and not inside[60:].any()
    crop = np.concatenate([image, np.repeat(image[-1:], 20, axis=0)])  # what crop_photo gives there
    soft = soften_outside(crop, inside)
    assert np.array_equal(soft[:60], crop[:60])

    def stripes(rows: np.ndarray) -> float:  # mean step between neighbouring columns
        return float(np.abs(np.diff(rows.astype(np.float64), axis=1)).mean())

    assert stripes(soft[66:70]) < 0.5 * stripes(crop[66:70])
    assert stripes(soft[76:80]) < stripes(soft[66:70])
    assert soften_outside(image, np.ones((60, 80), bool)) is image
