"""Streaming exports (DESIGN §11): rows read in keyset batches, written as CSV or NDJSON.

A batch is one short transaction (never the whole set in memory, never a transaction held for
the whole download: SQLite's writers would wait on it), encoded and sent before the next is read.
Rows deleted or added while an export runs may or may not appear; none appears twice.

CSV cells that a spreadsheet would run as a formula — starting with `=`, `+`, `-`, `@`, a tab or
a carriage return — get a leading `'` (OWASP "CSV Injection"). A phone number `+1415…` therefore
reads `'+1415…` in the CSV (the importer drops that `'` again: `unneutralise`); NDJSON carries
values unchanged. In CSV a list of strings (tags) is
`;`-joined as the importer reads it, other JSON values (attributes) are JSON text.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

import orjson
from starlette.responses import StreamingResponse

BATCH_ROWS = 2000  # rows per query and per body chunk: ~0.5 MB of CSV, a few ms of database time
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Format(StrEnum):
    csv = "csv"
    ndjson = "ndjson"


MEDIA_TYPES = {Format.csv: "text/csv; charset=utf-8", Format.ndjson: "application/x-ndjson"}

Row = dict[str, Any]
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
        return value  # ids and counts: never negative, so never a formula
    if kind is dt.datetime:
        return value.isoformat()
    if kind is list and all(type(v) is str for v in value):
        return neutralise(";".join(value))  # tags, as the importer reads them
    if kind is dict or kind is list:
        return neutralise(orjson.dumps(value).decode())
    return neutralise(str(value))


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def encode(rows: Sequence[Row], columns: Sequence[str], fmt: Format, *, header: bool = False) -> bytes:
    if fmt is Format.ndjson:
        return b"".join(orjson.dumps({c: _json_value(r[c]) for c in columns}) + b"\n" for r in rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_csv_cell(r[c]) for c in columns] for r in rows)
    return buf.getvalue().encode()


async def stream(
    fetch: FetchBatch, columns: Sequence[str], fmt: Format, batch_rows: int = BATCH_ROWS
) -> AsyncIterator[bytes]:
    """The encoded export, one chunk per batch; the CSV header comes even when nothing matches."""
    if fmt is Format.csv:
        yield encode([], columns, fmt, header=True)
    last: Row | None = None
    while True:
        rows = await fetch(last, batch_rows)
        if rows:
            yield encode(rows, columns, fmt)
        if len(rows) < batch_rows:
            return
        last = rows[-1]


def response(
    fetch: FetchBatch, columns: Sequence[str], fmt: Format, *, filename: str, batch_rows: int = BATCH_ROWS
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
