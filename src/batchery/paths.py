"""Where the job store lives (one place per user, whatever the working directory), and the .env
file keys are read from.

A store that depended on the working directory (the old default, ``./.batchery``) made the same
command run from another folder start from nothing and send (and bill) every request again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LEGACY_DIR = ".batchery"  # the old default, in the working directory
_announced: set[Path] = set()  # legacy folders already announced by this process


def default_store_dir() -> Path:
    """The per-user data folder (~/.local/share/batchery on Linux, honouring $XDG_DATA_HOME;
    ~/Library/Application Support/batchery on macOS; %LOCALAPPDATA%\\batchery on Windows)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("batchery", appauthor=False))


def resolve_store_dir(explicit: str | os.PathLike | None) -> Path:
    """--store PATH, else $BATCHERY_HOME, else ./.batchery if this folder has one (the old default,
    kept working with a notice), else the per-user data folder."""
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
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env")
