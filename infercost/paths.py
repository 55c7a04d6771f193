"""Paths from users and files, checked before anything is written: names read from a file stay
inside their folder, and an output path is writable before the work that fills it starts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from infercost.errors import InputError
from infercost.redact import control_escaped

# A name read from a file (a fleet task) that becomes a file or folder name: what fleet plan writes.
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?")


def safe_name(name, where: str) -> str:
    """`name` if it is a plain file name by NAME (no /, no .., no control characters), else InputError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"{where}: {control_escaped(repr(name))} is not a task name (lower-case letters, digits "
                         "and dashes)")
    return name


def inside(folder: Path, name: str, where: str) -> Path:
    """folder/name, refused unless it resolves inside folder (a link must not lead out either)."""
    path = Path(folder) / name
    root = Path(folder).resolve()
    if root not in path.resolve().parents:
        raise InputError(f"{where}: {control_escaped(str(path))} is outside {control_escaped(str(folder))}")
    return path


def _first_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists())


def writable_file(path: Path, flag: str) -> Path:
    """A file path that can be written (created with its folders if absent); InputError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {control_escaped(str(path))}: is a directory, not a file")
    existing = _first_existing(path)
    if existing != path and not existing.is_dir():
        raise InputError(f"{flag} {control_escaped(str(path))}: {control_escaped(str(existing))} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise InputError(f"{flag} {control_escaped(str(path))}: {control_escaped(str(existing))} is not writable")
    return path


def writable_folder(path: Path, flag: str) -> Path:
    """A folder that can be written into (made if absent); InputError otherwise."""
    path = Path(path)
    existing = _first_existing(path)
    if not existing.is_dir():
        raise InputError(f"{flag} {control_escaped(str(path))}: {control_escaped(str(existing))} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {control_escaped(str(path))}: {control_escaped(str(existing))} is not writable")
    return path
