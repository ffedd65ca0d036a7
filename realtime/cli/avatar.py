"""``splatcast avatar create | preview | info`` (and ``export distill``): thin CLI handlers.

The work lives in :mod:`engines.create.photo` (avatar from a photo) and
:mod:`engines.splat.preview` (the preview sheet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engines import assets
from realtime.settings import Settings


def _avatar_path(path: Path | None, settings: Settings) -> Path:
    if path is not None:
        return path
    if settings.avatar is not None:
        return settings.avatar
    return assets.default_avatar()


def create_command(settings: Settings, args: argparse.Namespace) -> int:
    """Build an avatar from ``--photo IMG``, ``--video CLIP`` (a replica) or ``--astronaut``; save it to ``-o``."""
    from tqdm import tqdm

    from engines.create.face_env import FaceEnvError
    from engines.create.photo import PhotoAvatarError, create_astronaut, create_from_photo
    from engines.splat.avatar import save_avatar

    video = getattr(args, "video", None)
    if sum(bool(x) for x in (args.photo, video, args.astronaut)) != 1:
        print(
            "splatcast avatar create: give exactly one of --photo IMG, --video CLIP or --astronaut",
            file=sys.stderr,
        )
        return 2
    if video:
        from realtime.cli.replica import create_video_command

        return create_video_command(settings, args)
    bar = tqdm(total=22, desc="avatar", unit="step", file=sys.stderr)

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg[:60])
        bar.update(1)

    start = time.monotonic()
    try:
        avatar = (
            create_astronaut(progress=progress)
            if args.astronaut
            else create_from_photo(args.photo, progress=progress)
        )
    except (PhotoAvatarError, FaceEnvError) as exc:
        bar.close()
        print(f"splatcast avatar create: {exc}", file=sys.stderr)
        return 1
    bar.close()
    path = save_avatar(avatar, args.output)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {avatar.count} Gaussians, "
        f"neutral PSNR {avatar.metadata.get('neutral_psnr_face_db', float('nan')):.1f} dB in the face region, "
        f"{time.monotonic() - start:.1f} s)"
    )
    return 0


def preview_command(settings: Settings, args: argparse.Namespace) -> int:
    """Render the labelled sheet of visemes, blink, smile and head poses to ``-o`` (PNG)."""
    from PIL import Image

    from engines.splat.avatar import AvatarFormatError, load_avatar
    from engines.splat.preview import render_sheet

    try:
        avatar = load_avatar(_avatar_path(args.avatar_path, settings))
    except (AvatarFormatError, assets.AssetMissingError) as exc:
        print(f"splatcast avatar preview: {exc}", file=sys.stderr)
        return 1
    sheet = render_sheet(avatar, backend=settings.render_backend)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.output, optimize=True)
    print(f"wrote {args.output} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def info_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print an avatar's metadata (without the long per-Gaussian index lists) as JSON."""
    from engines.splat.avatar import LAYER_NAMES, AvatarFormatError, load_avatar

    path = _avatar_path(args.avatar_path, settings)
    try:
        avatar = load_avatar(path)
    except (AvatarFormatError, assets.AssetMissingError) as exc:
        print(f"splatcast avatar info: {exc}", file=sys.stderr)
        return 1
    meta = {k: v for k, v in avatar.metadata.items() if k not in ("landmark_gaussians", "channels")}
    for key in ("inner_lip_upper_px", "inner_lip_lower_px", "face_oval_px"):
        if key in meta:
            meta[key] = f"<{len(meta[key])} points>"
    counts = {
        LAYER_NAMES[int(k)]: int((avatar.layers == k).sum()) for k in sorted(set(avatar.layers.tolist()))
    }
    summary = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "gaussians": avatar.count,
        "layers": counts,
        "channels": len(avatar.channels),
        "rig_delta_rows": int(avatar.rig.delta_index.size),
        "lod_levels": [int(level.index.size) for level in avatar.lods],
        "metadata": meta,
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def distill_command(settings: Settings, args: argparse.Namespace) -> int:
    """``splatcast export distill AVATAR [-o OUT] [--levels 1.0,0.5,0.25]``: add LOD levels, print their PSNR."""
    from tqdm import tqdm

    from engines.splat.avatar import AvatarFormatError, load_avatar, save_avatar
    from export.distill import DistillError, distill, parse_budgets

    try:
        budgets = parse_budgets(args.levels)
        avatar = load_avatar(args.avatar_path)
    except (DistillError, AvatarFormatError, OSError) as exc:
        print(f"splatcast export distill: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, DistillError) else 1
    bar = tqdm(total=len(budgets) + 1, desc="distill", unit="step", file=sys.stderr)

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg[:60])
        bar.update(1)

    start = time.monotonic()
    out, table = distill(avatar, args.levels, progress=progress)
    bar.close()
    path = save_avatar(out, args.output or args.avatar_path)
    print(f"wrote {path} with {len(out.lods)} LOD levels ({time.monotonic() - start:.1f} s)")
    print(f"{'LOD':>3}  {'budget':>7}  {'Gaussians':>9}  {'PSNR dB':>8}  {'face PSNR dB':>12}")
    for r in table:
        psnr = "full" if r.lod == 0 else f"{r.psnr_db:.2f}"
        face = "full" if r.lod == 0 else f"{r.psnr_face_db:.2f}"
        print(f"{r.lod:>3}  {100 * r.budget:>6.0f}%  {r.gaussians:>9}  {psnr:>8}  {face:>12}")
    print("PSNR: each level against LOD 0 over neutral, visemes aa/O/PP, blink, yaw ±15°, pitch ±10°")
    return 0
