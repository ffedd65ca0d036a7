"""``splatcast avatar list | add FILE --name N | rm ID``: the avatar library from the command line.

The same library directory as the server's (``--avatars DIR`` / ``SPLATCAST_AVATARS``, default
``~/.local/share/splatcast/avatars``), so an avatar added here shows up in a running server's picker,
and ``rm`` refuses an avatar a running server's session uses (the library's in-use lock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path

from engines.library.store import AvatarLibrary, LibraryError
from realtime.settings import Settings


def _library(settings: Settings) -> AvatarLibrary:
    return AvatarLibrary(settings.avatars)


def list_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the library: id, name, source, voice, created, in use (or one JSON array with --json)."""
    library = _library(settings)
    entries = library.list()
    if args.json:
        out = [{**e.to_json(), "in_use": library.in_use(e.id), "path": str(e.path)} for e in entries]
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"library: {library.root}")
    header = f"{'id':<14} {'name':<28} {'source':<8} {'voice':<22} {'created':<21} in use"
    print(header)
    print("-" * len(header))
    for e in entries:
        print(
            f"{e.id:<14} {e.name[:28]:<28} {e.source:<8} {(e.voice or 'default')[:22]:<22} "
            f"{e.created or '-':<21} {'yes' if library.in_use(e.id) else ''}"
        )
    return 0


def add_command(settings: Settings, args: argparse.Namespace) -> int:
    """Add an avatar file as it is, or build one from a photo or a video (checked like an upload)."""
    source: Path = args.file
    if not source.is_file():
        print(f"splatcast avatar add: {source}: no such file", file=sys.stderr)
        return 2
    library = _library(settings)
    voice = args.voice
    try:
        if voice is not None:
            from engines.voices import VoiceCatalog, VoiceError, default_voices_dir

            try:
                voice = VoiceCatalog(dirs=[settings.voices or default_voices_dir()]).resolve(voice).id
            except VoiceError as exc:
                print(f"splatcast avatar add: {exc}", file=sys.stderr)
                return 2
        with source.open("rb") as fh:
            head = fh.read(16)
        if len(head) >= 9 and head[8:9] == b"{":  # a safetensors header: an avatar file
            entry = library.add(source, args.name, "file", voice=voice)
            print(f"added {entry.id} ({entry.name!r}, {entry.gaussians} Gaussians)")
            return 0
        return asyncio.run(_build(settings, library, source, args.name, voice))
    except LibraryError as exc:
        print(f"splatcast avatar add: {exc}", file=sys.stderr)
        return 1


async def _build(
    settings: Settings, library: AvatarLibrary, source: Path, name: str, voice: str | None
) -> int:
    from tqdm import tqdm

    from engines.library.builds import BuildQueue
    from engines.library.uploads import (
        UploadError,
        UploadLimits,
        check_faces,
        inspect_media,
        load_photo,
        video_frames,
    )

    limits = UploadLimits()
    work = library.staging_dir("cli")
    try:
        try:
            info = await asyncio.to_thread(inspect_media, source, limits)
            if info.kind == "photo":
                images = [load_photo(source, max_side=1280)]
            else:
                images = video_frames(source, [info.duration_s * f for f in (0.2, 0.5, 0.8)])
            await asyncio.to_thread(check_faces, images, info.kind)
        except UploadError as exc:
            print(f"splatcast avatar add: {source}: {exc}", file=sys.stderr)
            return 1
        copy = work / f"upload{source.suffix.lower() or '.bin'}"
        shutil.copyfile(source, copy)
        from engines.voices import VoiceCatalog, default_voices_dir

        catalog = VoiceCatalog(dirs=[settings.voices or default_voices_dir()])
        queue = BuildQueue(library, voices=catalog.list, default_voice=lambda: catalog.default_id)
        queue.start()
        try:
            job = queue.submit(copy, info.kind, name, voice, work)
            events = queue.subscribe(job.id)
            bar = tqdm(total=100, desc="avatar", unit="%", file=sys.stderr)
            while True:
                event = await events.get()
                bar.n = round(100 * float(event["progress"]))
                bar.set_postfix_str(str(event["message"])[:60])
                bar.refresh()
                if event["state"] in ("done", "failed", "cancelled"):
                    break
            bar.close()
        finally:
            await queue.close()
        if job.state != "done":
            print(f"splatcast avatar add: the build {job.state}: {job.error}", file=sys.stderr)
            return 1
        entry = library.get(job.avatar_id)
        print(
            f"added {entry.id} ({entry.name!r}, {entry.source}, {entry.gaussians} Gaussians, built by {entry.builder})"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rm_command(settings: Settings, args: argparse.Namespace) -> int:
    """Delete an avatar; refused while a session (of any server on this library) uses it."""
    library = _library(settings)
    try:
        library.remove(args.avatar_id)
    except LibraryError as exc:
        print(f"splatcast avatar rm: {exc}", file=sys.stderr)
        return 1
    print(f"removed {args.avatar_id}")
    return 0
