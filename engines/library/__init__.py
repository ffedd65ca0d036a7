"""The avatar library: many avatars on one server, with metadata, previews, uploads and builds.

* :mod:`engines.library.store`: the directory of avatars (files, metadata,
  atomic writes, the bundled default, cross-process in-use locks).
* :mod:`engines.library.cache`: loaded avatars kept in memory under a stated
  byte bound; an avatar in use is never evicted.
* :mod:`engines.library.uploads`: an uploaded photo or video streamed to disk
  and checked (type, size, decompression bomb, truncation, faces) before a
  build is queued; a bad one leaves nothing behind.
* :mod:`engines.library.builds`: the build queue: one low-priority process
  per build, one at a time, positions, progress and failure reasons.

Nothing here does networking; the web layer wires it to HTTP.
"""
