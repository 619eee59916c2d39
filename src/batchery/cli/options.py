"""Options several command modules share, so no command module imports another."""

from __future__ import annotations

import typer

StoreOpt = typer.Option(None, "--store", help="Store directory (default: $BATCHERY_HOME, else the per-user "
                        "data folder, e.g. ~/.local/share/batchery; the same from any working directory).")
