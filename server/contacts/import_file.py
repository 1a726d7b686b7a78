"""An import's upload on disk, and its rows read back incrementally.

The upload is streamed to a file (gzip expanded on the way, never held in memory); rows are read
from it one line at a time with the byte offset after each row, so a job can stop after any
committed batch and resume there. A row with a NUL byte or bytes that are not UTF-8 is returned
with that problem, never refusing the whole file."""

from __future__ import annotations

import asyncio
import csv
import os
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

KNOWN = ("name", "email", "phone", "tags")
GZIP_MAGIC = b"\x1f\x8b"
# A gzip upload may expand to this many times the upload limit (CSV compresses ~5-10x); past it
# the upload is refused rather than filling the disk (a decompression bomb).
IMPORT_MAX_EXPANSION = 8
_CHUNK = 1 << 20  # expanded bytes per step: bounds memory whatever the compression ratio


class ImportRefused(ValueError):
    """The file itself cannot be imported (not CSV, no header, too large)."""


class UploadTooLarge(ImportRefused):
    pass


class _Sink:
    """The spool file, written a megabyte at a time from a thread (the event loop never waits on
    the disk), refusing past its limit."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self._buf: list[bytes] = []
        self._size = 0
        self._file: BinaryIO | None = None

    async def put(self, data: bytes) -> None:
        self.written += len(data)
        if self.written > self.limit:
            raise UploadTooLarge(f"The CSV is larger than {self.limit} bytes.")
        self._buf.append(data)
        self._size += len(data)
        if self._size >= _CHUNK:
            await self.flush()

    async def flush(self) -> None:
        data, self._buf, self._size = b"".join(self._buf), [], 0
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "wb")
        self._file.write(data)

    async def close(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)


async def spool(chunks: AsyncIterator[bytes], path: Path, *, gzip: bool | None, max_bytes: int) -> int:
    """Write the upload to `path`, expanding gzip (`gzip=None`: by its magic bytes); returns the
    bytes written. Raises UploadTooLarge past `max_bytes` (IMPORT_MAX_EXPANSION times that once
    expanded)."""
    inflater: Any = None  # zlib's decompress object
    first = True
    sink = _Sink(path, max_bytes)
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            if first:
                first = False
                if gzip or (gzip is None and chunk.startswith(GZIP_MAGIC)):
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    sink.limit = max_bytes * IMPORT_MAX_EXPANSION
            if inflater is None:
                await sink.put(chunk)
                continue
            data = chunk
            while data:
                try:
                    await sink.put(inflater.decompress(data, _CHUNK))
                    data = inflater.unconsumed_tail
                    if inflater.eof:  # a file of several gzip members: the next one starts here
                        data = inflater.unused_data + data
                        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                except zlib.error as exc:
                    raise ImportRefused(f"The upload is not valid gzip: {exc}") from None
        if inflater is not None:
            await sink.put(inflater.flush())
        await sink.flush()
    finally:
        await sink.close()
    return sink.written


@dataclass(slots=True)
class Row:
    line: int  # the row's (last) line in the file, header = 1
    values: dict[str, str]
    problem: tuple[str, str] | None = None  # (column, message): NUL byte or not UTF-8


def _is_blank(values: list[str]) -> bool:
    return not "".join(values).strip()


class CsvRows:
    """Rows of a CSV file read one line at a time, keeping the byte offset after each row.

    `CsvRows(f)` reads the header; `seek(offset, line)` continues after a row read before."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.offset = 0
        self.line = 0
        self._nul = False
        self._bad = False
        header = f.readline()
        self.offset = len(header)
        self.line = 1
        try:
            text = header.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportRefused("The file is not UTF-8 text.") from None
        try:
            names = next(csv.reader([text]), [])
        except csv.Error as exc:
            raise ImportRefused(f"The file is not valid CSV: {exc}") from None
        if not names:
            raise ImportRefused("The file is empty: a header row is expected.")
        self.names = [h.strip().lower() for h in names]
        self._all_named = all(self.names)  # then a row's values zip with them as they are
        if not any(n in KNOWN for n in self.names):
            raise ImportRefused("The header must name at least one of: name, email, phone, tags.")
        self._reader = csv.reader(self._lines())

    def seek(self, offset: int, line: int) -> None:
        if offset > self.offset:
            self.f.seek(offset)
            self.offset, self.line = offset, line

    def _lines(self) -> Iterator[str]:
        for raw in self.f:
            self.offset += len(raw)
            self.line += 1
            if b"\x00" in raw:
                self._nul = True
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self._bad = True
                yield raw.decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[Row]:
        return self

    def __next__(self) -> Row:
        """The next non-blank row; raises ImportRefused for what csv cannot read at all."""
        while True:
            try:
                values = next(self._reader)
            except csv.Error as exc:
                raise ImportRefused(f"Line {self.line} is not valid CSV: {exc}") from None
            nul, bad = self._nul, self._bad
            self._nul = self._bad = False
            if _is_blank(values):
                continue
            if self._all_named:
                row = Row(self.line, dict(zip(self.names, values, strict=False)))
            else:
                row = Row(self.line, {n: v for n, v in zip(self.names, values, strict=False) if n})
            if nul or bad:
                row.problem = _problem(row.values, nul=nul)
            return row


def _problem(values: dict[str, str], *, nul: bool) -> tuple[str, str]:
    for name, v in values.items():
        if nul and "\x00" in v:
            return name, "contains a NUL byte"
        if not nul and any("\udc80" <= ch <= "\udcff" for ch in v):
            return name, "is not valid UTF-8"
    return "row", "contains a NUL byte" if nul else "is not valid UTF-8"


def count_rows(path: Path) -> int:
    """Check the header and count the rows an import of `path` will process (ImportRefused)."""
    with open(path, "rb") as f:
        return sum(1 for _ in CsvRows(f))


def parse_csv(raw: bytes) -> list[Row]:
    """Every row of a small CSV held in memory (tests and tools)."""
    import io

    return list(CsvRows(io.BytesIO(raw)))


def remove(path: str | os.PathLike[str] | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
