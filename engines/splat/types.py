"""Plain data types shared by the splat avatar, rig and rasterisers.

Camera space everywhere: x right, y down, z forward (away from the camera).
A pixel (row i, col j) is sampled at (u, v) = (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SplatShapeError(ValueError):
    """Arrays handed to the splat engine have inconsistent shapes or dtypes."""


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; intrinsics in pixels of an image of ``height`` × ``width``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, height: int, width: int) -> Camera:
        """The same view drawn into an image of ``height`` × ``width`` pixels.

        Intrinsics scale with the pixel grid (pixel centres stay where they
        are in normalised image coordinates), so a non-uniform resize
        stretches the picture exactly like resizing the image would.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        sx = width / self.width
        sy = height / self.height
        return Camera(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=int(width),
            height=int(height),
        )


@dataclass
class PosedGaussians:
    """A batch of Gaussians ready to draw, in camera space."""

    means: np.ndarray  # [B, N, 3] float32
    quats: np.ndarray  # [B, N, 4] float32, (w, x, y, z), unit length
    scales: np.ndarray  # [B, N, 3] float32, standard deviations along local axes
    opacities: np.ndarray  # [B, N] float32 in (0, 1]
    colors: np.ndarray  # [B, N, 3] float32 in [0, 1] (sRGB)

    @property
    def batch(self) -> int:
        return int(self.means.shape[0])

    @property
    def count(self) -> int:
        return int(self.means.shape[1])

    def validate(self) -> None:
        """Raise :class:`SplatShapeError` unless shapes and dtypes match the contract."""
        m = self.means
        if m.ndim != 3 or m.shape[2] != 3:
            raise SplatShapeError(f"means must be [B, N, 3], got {m.shape}")
        b, n = m.shape[0], m.shape[1]
        expected = {
            "means": (b, n, 3),
            "quats": (b, n, 4),
            "scales": (b, n, 3),
            "opacities": (b, n),
            "colors": (b, n, 3),
        }
        for name, shape in expected.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise SplatShapeError(f"{name} must be a numpy array, got {type(arr).__name__}")
            if arr.shape != shape:
                raise SplatShapeError(f"{name} must have shape {shape}, got {arr.shape}")
            if arr.dtype != np.float32:
                raise SplatShapeError(f"{name} must be float32, got {arr.dtype}")
