"""Read the Azure Functions 2019 invocation trace and turn per-minute counts into arrival times.

The public dataset (Shahrad et al., "Serverless in the Wild", ATC'20;
``invocations_per_function_md.anon.d01.csv`` … ``d14``) has one row per function::

    HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440

where column ``m`` holds the number of invocations in minute ``m`` of the day. Files are read
with pyarrow's streaming CSV reader (a day file has tens of thousands of rows x 1,444 columns),
one block at a time, keeping only the selected rows. When pyarrow rejects a file, a plain
``csv`` pass finds the first bad line and column so the error can name them.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from servelab.errors import WorkloadError

ID_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
BLOCK_BYTES = 1 << 24  # text read per block: memory stays flat however large the file
FORMAT_HINT = (
    "an Azure Functions 2019 invocation CSV has the header HashOwner,HashApp,HashFunction,Trigger,1,2,…,1440"
)


@dataclass(frozen=True)
class TraceSelection:
    """Per-minute counts of the chosen function(s), summed, and where they came from."""

    counts: np.ndarray  # int64, one entry per minute of the trace
    functions: tuple[str, ...]  # HashFunction of each chosen row
    lines: tuple[int, ...]  # 1-based line numbers of the chosen rows in the file
    n_functions: int  # data rows in the whole file


def read_header(path: Path) -> int:
    """Check the header line of an Azure invocation CSV and return its number of minutes."""
    if not path.is_file():
        raise WorkloadError(f"trace file {path} does not exist")
    with path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise WorkloadError(f"{path}: the file is empty; {FORMAT_HINT}")
    for col, (want, got) in enumerate(zip(ID_COLUMNS, header, strict=False), start=1):
        if got.strip() != want:
            raise WorkloadError(
                f"{path}: line 1, column {col}: expected {want!r}, found {got!r}; {FORMAT_HINT}"
            )
    minutes = [h.strip() for h in header[len(ID_COLUMNS) :]]
    if len(header) <= len(ID_COLUMNS):
        raise WorkloadError(f"{path}: line 1 has no minute columns; {FORMAT_HINT}")
    for m, name in enumerate(minutes, start=1):
        if name != str(m):
            raise WorkloadError(
                f"{path}: line 1, column {m + len(ID_COLUMNS)}: expected minute {str(m)!r}, found {name!r}; "
                f"minute columns must be numbered 1, 2, 3, … in order"
            )
    return len(minutes)


def select_counts(
    path: Path, *, function: str | None = None, row: int | None = None, top: int | None = None
) -> TraceSelection:
    """Per-minute counts for one function (by HashFunction or a unique prefix of it, or by
    0-based data row) or the sum of the ``top`` busiest functions (the default, with top = 1).
    Cached per file version, so a spec's mean rate and its generation read the file once."""
    path = Path(path)
    n_minutes = read_header(path)  # also checks that the file exists
    st = path.stat()
    if function is None and row is None and top is None:
        top = 1
    return _select_cached(str(path.resolve()), st.st_mtime_ns, st.st_size, n_minutes, function, row, top)


@functools.lru_cache(maxsize=8)
def _select_cached(
    path_str: str,
    _mtime_ns: int,
    _size: int,
    n_minutes: int,
    function: str | None,
    row: int | None,
    top: int | None,
) -> TraceSelection:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    path = Path(path_str)
    minute_cols = [str(m) for m in range(1, n_minutes + 1)]
    types = {c: pa.string() for c in ID_COLUMNS} | {c: pa.int64() for c in minute_cols}
    picked: list[tuple[int, str, np.ndarray]] = []  # (data row, HashFunction, counts)
    n_rows = 0
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
        for batch in reader:
            # Work column by column (zero-copy views): building a rows x 1440 matrix per block
            # would cost 20x more than the few rows we keep.
            minutes = _minute_columns(path, batch, minute_cols, n_rows)
            names = batch.column("HashFunction")
            if function is not None:
                hits = np.flatnonzero(pc.starts_with(names, function).to_numpy(zero_copy_only=False))
            elif row is not None:
                in_block = n_rows <= row < n_rows + batch.num_rows
                hits = np.array([row - n_rows] if in_block else [], dtype=np.int64)
            else:
                assert top is not None
                totals = np.zeros(batch.num_rows, np.int64)
                for col in minutes:
                    totals += col
                hits = np.argsort(-totals, kind="stable")[:top]
            rows = np.stack([col[hits] for col in minutes], axis=1)
            picked += [(n_rows + int(i), str(names[int(i)]), r) for i, r in zip(hits, rows, strict=True)]
            if top is not None:
                picked = _keep_top(picked, top)
            n_rows += batch.num_rows
    except pa.ArrowInvalid as e:
        raise _diagnose(path, n_minutes) or WorkloadError(f"{path}: cannot read trace: {e}") from None
    picked = _resolve(path, picked, function=function, row=row, n_rows=n_rows)
    counts: np.ndarray = (
        np.asarray(np.sum([c for _, _, c in picked], axis=0, dtype=np.int64)) if picked
        else np.zeros(n_minutes, np.int64)
    )
    return TraceSelection(
        counts=counts,
        functions=tuple(name for _, name, _ in picked),
        lines=tuple(r + 2 for r, _, _ in picked),
        n_functions=n_rows,
    )


def _minute_columns(path: Path, batch: Any, minute_cols: list[str], first_row: int) -> list[np.ndarray]:
    """The block's per-minute count columns as numpy views, checked: no empty or negative cells."""
    cols = []
    for m, name in enumerate(minute_cols, start=1):
        col = batch.column(name)
        where = f"column {m + len(ID_COLUMNS)} (minute {name})"
        if col.null_count:
            i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise WorkloadError(
                f"{path}: line {first_row + i + 2}, {where}: empty count; "
                "every minute needs a whole number of invocations (0 if none)"
            )
        values = col.to_numpy()
        if values.size and values.min() < 0:
            i = int(np.argmax(values < 0))
            raise WorkloadError(
                f"{path}: line {first_row + i + 2}, {where}: count {values[i]} is negative; "
                "invocation counts must be >= 0"
            )
        cols.append(values)
    return cols


def _keep_top(picked: list[tuple[int, str, np.ndarray]], top: int) -> list[tuple[int, str, np.ndarray]]:
    """Busiest first; ties go to the earlier row, so the choice does not depend on block size."""
    return sorted(picked, key=lambda p: (-int(p[2].sum()), p[0]))[:top]


def _resolve(
    path: Path,
    picked: list[tuple[int, str, np.ndarray]],
    *,
    function: str | None,
    row: int | None,
    n_rows: int,
) -> list[tuple[int, str, np.ndarray]]:
    if function is not None:
        exact = [p for p in picked if p[1] == function]
        picked = exact or picked
        if not picked:
            raise WorkloadError(
                f"{path}: no function whose HashFunction is or starts with {function!r} "
                f"({n_rows} functions in the file)"
            )
        if len(picked) > 1:
            lines = ", ".join(str(r + 2) for r, _, _ in picked[:5])
            raise WorkloadError(
                f"{path}: {len(picked)} functions match {function!r} (lines {lines}"
                f"{', …' if len(picked) > 5 else ''}); give more of the hash, or use row"
            )
    if row is not None and not picked:
        raise WorkloadError(
            f"{path}: row {row} is out of range; the file has {n_rows} data rows (0..{n_rows - 1})"
        )
    return picked


def _diagnose(path: Path, n_minutes: int) -> WorkloadError | None:
    """Find the first malformed line with the csv module (slow, but only runs on a bad file)."""
    width = len(ID_COLUMNS) + n_minutes
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for record in reader:
            if not record:
                continue
            line = reader.line_num
            if len(record) != width:
                return WorkloadError(
                    f"{path}: line {line} has {len(record)} fields, expected {width} "
                    f"({len(ID_COLUMNS)} id columns + {n_minutes} minutes)"
                )
            for col, value in enumerate(record[len(ID_COLUMNS) :], start=len(ID_COLUMNS) + 1):
                if not value.strip().isdigit():
                    where = f"line {line}, column {col} (minute {col - len(ID_COLUMNS)})"
                    return WorkloadError(f"{path}: {where}: {value!r} is not a whole number of invocations")
    return None


def scale_counts(counts: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply counts by ``factor``; a fractional part f becomes one more arrival with
    probability f, so the expected count is exact and integer factors are exact."""
    scaled = counts * factor
    whole = np.floor(scaled)
    return (whole + (rng.random(counts.size) < scaled - whole)).astype(np.int64)


def spread(
    counts: np.ndarray,
    bin_s: float,
    rng: np.random.Generator,
    *,
    mode: Literal["uniform", "even"] = "uniform",
) -> np.ndarray:
    """Arrival times for ``counts[k]`` arrivals in ``[k·bin_s, (k+1)·bin_s)``, sorted.

    ``uniform``: independent uniform times within the bin (the Poisson process conditioned on the
    count). ``even``: evenly spaced, at the centres of ``counts[k]`` equal sub-intervals.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    starts = np.repeat(np.arange(counts.size) * bin_s, counts)
    if mode == "uniform":
        return np.sort(starts + rng.random(n) * bin_s)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # index of each bin's first arrival
    rank = np.arange(n) - first
    return starts + (rank + 0.5) / np.repeat(counts, counts) * bin_s
