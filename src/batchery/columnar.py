"""Parquet and pandas: optional libraries, imported only when asked for, with an error naming the
extra that installs them (`pip install 'batchery[parquet]'`, `'batchery[pandas]'`).

pyarrow is large (tens of MB), so it is not a dependency of every install; `batchery --help`,
runs and JSONL/CSV exports never import it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError, OutputError


def pyarrow() -> Any:
    """The pyarrow module (with pyarrow.parquet loaded), or a ConfigError saying how to get it."""
    try:
        import pyarrow as pa
        import pyarrow.parquet  # loads pa.parquet
    except ImportError:
        raise ConfigError("Parquet output needs pyarrow, an optional extra: pip install 'batchery[parquet]'") from None
    return pa


def pandas() -> Any:
    """The pandas module, or a ConfigError saying how to get it."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("to_pandas needs pandas, an optional extra: pip install 'batchery[pandas]'") from None
    return pd


def _column(pa: Any, values: list) -> Any:
    """One column, typed from its values (None is null). A column whose values do not share a type
    (a human label given as true in one line and 4 in another), or holds lists or mappings, is
    JSON text: every cell readable, none dropped."""
    if not any(isinstance(v, (dict, list, tuple)) for v in values):
        try:
            return pa.array(values, from_pandas=True)  # NaN is null, as in the CSV (blank) and JSON (null)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pa.array([None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values],
                    type=pa.string())


def write_table(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """A small table (an evaluation's items or figures) as one Parquet file, columns in the given
    order. Written beside `path` and renamed over it, so an interrupted write leaves no half file."""
    pa = pyarrow()
    rows = list(rows)
    table = pa.table({c: _column(pa, [row.get(c) for row in rows]) for c in columns})
    tmp = path.with_name(path.name + ".tmp")
    try:
        pa.parquet.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
