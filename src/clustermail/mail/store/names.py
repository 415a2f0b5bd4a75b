"""Folder names: validation, INBOX case-folding and hierarchy (delimiter "/"). Pure."""

from __future__ import annotations

import functools

from clustermail.mail.store.errors import InvalidFolderNameError

DELIMITER = "/"
INBOX = "INBOX"
MAX_NAME_CHARS = 1000
MAX_LEVEL_CHARS = 255

# Created with every mailbox: (name, RFC 6154 special-use attribute).
SPECIAL_FOLDERS: tuple[tuple[str, str | None], ...] = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


@functools.lru_cache(maxsize=1024)  # a pure function on every store call's path
def normalize(name: str) -> str:
    """The canonical form of a folder name, or InvalidFolderNameError saying what is wrong.
    INBOX is case-insensitive (RFC 3501 §5.1), including as the first level of a path."""
    if not name:
        raise InvalidFolderNameError("folder name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidFolderNameError(f"folder name is longer than {MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidFolderNameError(f"folder name {name!r} contains a control character")
    levels = name.split(DELIMITER)
    for level in levels:
        if not level:
            raise InvalidFolderNameError(f"folder name {name!r} has an empty level")
        if len(level) > MAX_LEVEL_CHARS:
            raise InvalidFolderNameError(
                f"a level of {name!r} exceeds {MAX_LEVEL_CHARS} characters"
            )
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    return DELIMITER.join(levels)


def is_inferior(name: str, parent: str) -> bool:
    """Whether ``name`` lies below ``parent`` in the hierarchy."""
    return name.startswith(parent + DELIMITER)


def renamed(name: str, old: str, new: str) -> str:
    """``name`` after renaming ``old`` (itself or an ancestor) to ``new``."""
    return new if name == old else new + name[len(old) :]
