"""Names that come from outside (S3 keys, landing file names, request files) checked before
anything is written under them.

An S3 key is any string: `/etc/x`, `a/../../x` and `a//b` are all valid keys, and joined to
a local folder they name a place outside it. Every such name is refused unless it is a plain
relative path whose every segment is a real name, and the joined path must still resolve
inside its folder (a symbolic link in the folder could lead out).
"""

from __future__ import annotations

from pathlib import Path


class UnsafeKeyError(ValueError):
    """A name from outside would be written outside its folder; the message says why."""


def unsafe_key_reason(key: str) -> str | None:
    """Why `key` ('/'-separated) cannot be used as a name under a folder, or None."""
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it starts with '/' (an absolute path)"
    if "\\" in key or "\x00" in key:
        return "it holds a backslash or a NUL character"
    segments = key.split("/")
    if ".." in segments:
        return "it has a '..' segment (a parent folder)"
    if "" in segments[:-1] or "." in segments:
        return "it has an empty or '.' segment"
    return None


def path_inside(folder: Path, key: str, what: str) -> Path:
    """`folder / key`, refused with UnsafeKeyError if it would leave `folder`."""
    reason = unsafe_key_reason(key)
    if reason is None:
        path = (folder / key).resolve()
        if path.is_relative_to(folder.resolve()):
            return path
        reason = "it resolves outside the folder (through a symbolic link)"
    raise UnsafeKeyError(f"{what} {key!r} refused: {reason}; nothing is written outside "
                         f"{folder}")
