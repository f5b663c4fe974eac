"""What a storage URL says without opening it: the default, the local file it names, its password hidden.

Nothing here imports Optuna or a database driver, so command-line parsers and messages can use it at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

DEFAULT_STORAGE = "sqlite:///toxitune.db"
# The password of ``scheme://user:password@host``. It runs to the last "@": SQLAlchemy ends it at the
# first "@" and redis-py at the last one before the path, so this hides at least what either reads.
_USERINFO_PASSWORD = re.compile(r"(?P<head>://[^:/@?#]*:)(?P<password>.*)(?=@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&;]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with its passwords shown as ``***``, for printing, logging and writing to files.

    Hides the password of the user-info part and of a ``password=`` query parameter; anything else,
    text without a URL included, comes back unchanged.

    Args:
        url: a storage URL, or any text that may hold one (such as a command-line argument).

    Example:
        >>> redact("postgresql://user:secret@host/db")
        'postgresql://user:***@host/db'
        >>> redact("redis://:secret@host:6379/0?password=secret")
        'redis://:***@host:6379/0?password=***'
    """
    url = _USERINFO_PASSWORD.sub(r"\g<head>***", url)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


def hide_passwords(text: str, url: str) -> str:
    """``text`` (a driver's error) without ``url``'s passwords, as written or percent-decoded."""
    for pattern in (_USERINFO_PASSWORD, _QUERY_PASSWORD):
        for match in pattern.finditer(url):
            for secret in {match["password"], unquote(match["password"])} - {""}:
                text = text.replace(secret, "***")
    return redact(text)


def new_storage_file(url: str) -> Path | None:
    """The local file that opening ``url`` would create: a SQLite database or journal not yet there.

    ``None`` for a server URL or a file that exists. A command that fails before storing a study
    deletes this file, so that it leaves nothing behind.
    """
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:")).expanduser()
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
    else:
        return None
    return None if path.exists() else path
