"""Streaming exports (DESIGN §11): rows read in keyset batches, written as CSV or NDJSON.

A batch is one short transaction (never the whole set in memory, never a transaction held for
the whole download: SQLite's writers would wait on it), encoded and sent before the next is read.
Rows deleted or added while an export runs may or may not appear; none appears twice.

CSV cells that a spreadsheet would run as a formula — starting with `=`, `+`, `-`, `@`, a tab or
a carriage return — get a leading `'` (OWASP "CSV Injection"). A phone number `+1415…` therefore
reads `'+1415…` in the CSV (the importer drops that `'` again: `unneutralise`); NDJSON carries
values unchanged. In CSV a list of strings (tags) is `;`-joined as the importer reads it, other
JSON values (attributes) are compact JSON text.

Speed (decision 82): a batch is read with Core (plain rows, not ORM ones) and encoded a column at
a time by what each column holds (`Cell`), not a cell at a time by the type of its value. JSON
columns are read as their stored text (`cast(…, Text)`: on PostgreSQL the driver would otherwise
decode jsonb with the json module) and decoded with orjson; they are encoded again because
PostgreSQL's jsonb text is not the compact JSON the export writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import StrEnum
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from starlette.responses import StreamingResponse

BATCH_ROWS = 2000  # rows per query and per body chunk: ~0.5 MB of CSV, a few ms of database time
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Format(StrEnum):
    csv = "csv"
    ndjson = "ndjson"


MEDIA_TYPES = {Format.csv: "text/csv; charset=utf-8", Format.ndjson: "application/x-ndjson"}


class Cell(StrEnum):
    """What a column holds (each may also be None), which says how it is written."""

    number = "number"  # ints: ids and counts, never negative, so never a formula
    text = "text"  # strings: neutralised in CSV
    time = "time"  # aware datetimes: ISO 8601 (`isoformat`, which is also what orjson writes)
    json = "json"  # JSON text as stored, decoded here (see the module docstring)
    value = "value"  # anything else (a consent object): by the type of each value


class Column(NamedTuple):
    name: str
    cell: Cell


Row = dict[str, Any]  # a row by column name (it may hold more than the export's columns)
# The rows after `last` (None: from the start), at most `limit` of them, in export order.
FetchBatch = Callable[[Row | None, int], Awaitable[Sequence[Row]]]


def neutralise(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text, never evaluates."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def unneutralise(cell: str) -> str:
    """A cell as it was before `neutralise` (the importer reads exported files back)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _csv_cell(value: Any) -> Any:
    """What csv.writer gets for one value: ints and None it writes itself (None as empty)."""
    kind = type(value)
    if kind is str:
        return "'" + value if value.startswith(FORMULA_START) else value
    if kind is int or value is None:
        return value
    if kind is dt.datetime:
        return value.isoformat()
    if kind is list and all(type(v) is str for v in value):
        return neutralise(";".join(value))  # tags, as the importer reads them
    if kind is dict or kind is list:
        return neutralise(orjson.dumps(value).decode())
    return neutralise(str(value))


# Column-wise conversions, one list per column per batch: a comprehension per column costs a
# fraction of a function call per cell. A cell kind missing from a table is written as it is.
Convert = Callable[[Sequence[Any]], Sequence[Any]]


def _decoded(values: Sequence[str | None]) -> list[Any]:
    return [None if v is None else orjson.loads(v) for v in values]


_CSV: dict[Cell, Convert] = {
    Cell.text: lambda vs: [v if v is None or not v.startswith(FORMULA_START) else "'" + v for v in vs],
    # orjson writes a datetime as `isoformat` does, a column in one call (a seventh of the time)
    Cell.time: lambda vs: orjson.loads(orjson.dumps(vs)),
    Cell.json: lambda vs: [_csv_cell(v) for v in _decoded(vs)],
    Cell.value: lambda vs: [_csv_cell(v) for v in vs],
}
_NDJSON: dict[Cell, Convert] = {Cell.json: _decoded}  # orjson writes the rest itself


def _by_column(rows: Sequence[Row], columns: Sequence[Column], table: dict[Cell, Convert]) -> list[Any]:
    """The batch's `columns` as tuples, each column converted by `table`."""
    pick = itemgetter(*(c.name for c in columns))
    values: list[Sequence[Any]] = list(zip(*map(pick, rows), strict=True)) or [() for _ in columns]
    for i, column in enumerate(columns):
        convert = table.get(column.cell)
        if convert is not None:
            values[i] = convert(values[i])
    return list(zip(*values, strict=True))


def _csv_writer(buf: io.StringIO) -> Any:
    return csv.writer(buf, lineterminator="\r\n")


def header(columns: Sequence[Column]) -> bytes:
    """The CSV header line."""
    buf = io.StringIO()
    _csv_writer(buf).writerow([c.name for c in columns])
    return buf.getvalue().encode()


def encode(rows: Sequence[Row], columns: Sequence[Column], fmt: Format) -> bytes:
    if fmt is Format.ndjson:
        names = [c.name for c in columns]
        line = orjson.OPT_APPEND_NEWLINE
        values = _by_column(rows, columns, _NDJSON)
        return b"".join([orjson.dumps(dict(zip(names, v, strict=True)), option=line) for v in values])
    buf = io.StringIO()
    _csv_writer(buf).writerows(_by_column(rows, columns, _CSV))
    return buf.getvalue().encode()


async def stream(
    fetch: FetchBatch, columns: Sequence[Column], fmt: Format, batch_rows: int = BATCH_ROWS
) -> AsyncIterator[bytes]:
    """The encoded export, one chunk per batch; the CSV header comes even when nothing matches."""
    if fmt is Format.csv:
        yield header(columns)
    last: Row | None = None
    while True:
        rows = await fetch(last, batch_rows)
        if rows:
            yield encode(rows, columns, fmt)
        if len(rows) < batch_rows:
            return
        last = rows[-1]


def response(
    fetch: FetchBatch, columns: Sequence[Column], fmt: Format, *, filename: str, batch_rows: int = BATCH_ROWS
) -> StreamingResponse:
    """The download: chunked, `Content-Disposition: attachment`, never cached."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        stream(fetch, columns, fmt, batch_rows),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}-{stamp}.{fmt.value}"',
            "Cache-Control": "no-store",
        },
    )
