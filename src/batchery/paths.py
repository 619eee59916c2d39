"""Where the job store lives (one place per user, whatever the working directory), and the .env
file keys are read from.

A store that depended on the working directory (the old default, ``./.batchery``) made the same
command run from another folder start from nothing and send (and bill) every request again.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

LEGACY_DIR = ".batchery"  # the old default, in the working directory
_announced: set[Path] = set()  # legacy folders already announced by this process


def default_store_dir() -> Path:
    """The per-user data folder (~/.local/share/batchery on Linux, honouring $XDG_DATA_HOME;
    ~/Library/Application Support/batchery on macOS; %LOCALAPPDATA%\\batchery on Windows)."""
    if sys.platform.startswith("linux") and not (hasattr(sys, "getandroidapilevel") or "ANDROID_DATA" in os.environ):
        # platformdirs' rule for Linux, without its import (some 10 ms of `batchery status`'s start-up):
        # $XDG_DATA_HOME if absolute, else ~/.local/share; a relative or missing $HOME is left to it
        data, home = os.environ.get("XDG_DATA_HOME", ""), os.environ.get("HOME", "")
        if os.path.isabs(data) or os.path.isabs(home):
            return Path(data if os.path.isabs(data) else os.path.join(home, ".local/share"), "batchery")
    import platformdirs

    return Path(platformdirs.user_data_dir("batchery", appauthor=False))


def store_url(explicit: str | os.PathLike | None) -> str | None:
    """The PostgreSQL URL the store is at (--store, else $BATCHERY_HOME), or None for a folder.
    A URL that went through Path (the CLI's --store, a config's `store:`) lost a slash: put back."""
    value = os.fspath(explicit) if explicit else os.environ.get("BATCHERY_HOME", "")
    match = re.match(r"(postgres(?:ql)?):/+", value)
    return f"{match.group(1)}://{value[match.end():]}" if match else None


def resolve_store_dir(explicit: str | os.PathLike | None) -> Path:
    """--store PATH, else $BATCHERY_HOME, else ./.batchery if this folder has one (the old default,
    kept working with a notice), else the per-user data folder.

    For a store on PostgreSQL, the local folder of this machine's working files for it (batch
    files being uploaded, prices), under the per-user data folder; the jobs live in the database."""
    url = store_url(explicit)
    if url:
        import hashlib

        from .store_pg import redact

        name = re.sub(r"[^A-Za-z0-9._-]+", "_", redact(url).split("://", 1)[1].split("?")[0])[:80]
        return default_store_dir() / "postgresql" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
    if explicit:
        return Path(explicit)
    if os.environ.get("BATCHERY_HOME"):
        return Path(os.environ["BATCHERY_HOME"])
    legacy = Path.cwd() / LEGACY_DIR
    if legacy.is_dir():
        if legacy not in _announced:
            _announced.add(legacy)
            print(f"using ./{LEGACY_DIR} in this folder (an older default); the default store is now "
                  f"{default_store_dir()}, the same from any folder: move ./{LEGACY_DIR} there, or set "
                  "BATCHERY_HOME or --store, to keep this one", file=sys.stderr)
        return legacy
    return default_store_dir()


def load_env() -> None:
    """API keys from a .env file in the working directory (the CLI and the Python API alike);
    variables already set win."""
    env = Path.cwd() / ".env"
    if not env.is_file():  # the common case: python-dotenv is not even imported
        return
    from dotenv import load_dotenv

    load_dotenv(env)
