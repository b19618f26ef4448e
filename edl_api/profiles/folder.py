"""Each profile's own folder for `path:` sources: `EDL_SOURCE_DIR/<profile_id>/`.

Made by the service (never the engine child) the first time it is needed: when a run of
the profile reads files, or when `GET /profiles/{id}` shows it. The engine resolves every
`path:` below it, symlinks included (`engine.sources.read_path`).
"""

from __future__ import annotations

import os
from pathlib import Path

from edl_api.settings import Settings

FOLDER_MODE = 0o750
MAX_LISTED_FILES = 1000


def profile_folder(settings: Settings, profile_id: int, *, create: bool) -> Path | None:
    """The profile's source folder (absolute), or None when EDL_SOURCE_DIR is unset."""
    if settings.source_dir is None:
        return None
    folder = settings.source_dir.resolve() / str(profile_id)
    if create and not folder.is_dir():
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is narrowed by the umask only
    return folder


def list_files(folder: Path, limit: int = MAX_LISTED_FILES) -> tuple[list[str], bool]:
    """Relative paths of the files below `folder` (sorted, at most `limit`), and whether
    there were more. Symlinked folders are not descended into."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            found.append(os.path.relpath(os.path.join(root, name), folder))
            if len(found) > limit:
                return sorted(found)[:limit], True
    return sorted(found), False
