"""Checks on paths a command will write under, made before anything is written."""

from __future__ import annotations

from pathlib import Path


def file_in_the_way(folder: Path) -> Path | None:
    """The existing non-folder (a file, ``/dev/null``) that stands at ``folder`` or at one of its
    parents, so that ``folder`` can be neither used nor made; None when nothing does. Nothing
    is created."""
    for part in (folder, *folder.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None
