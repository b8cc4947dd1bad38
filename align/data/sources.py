"""Read raw rows from a source: jsonl / json (gzip or not), parquet, a local directory of those, or the hub.

Every reader yields ``(0-based row index, row, where)``: ``row`` is parsed JSON / a dict, or a ``BadRow``
with the skip reason when the bytes of that row could not be read; ``where`` is "" for a single file and
" (file:row)" inside a directory, for messages. A damaged part of a source (a corrupt gzip stream after some
rows, a bad parquet row group, an unreadable file in a directory) is one ``BadRow`` and a warning; only a
source with nothing readable at all is a ``DataError``. Nothing is cached or written anywhere.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from align.errors import DataError

log = logging.getLogger("align.data")

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_GZIP_MAGIC = b"\x1f\x8b"
# Bytes that are not UTF-8 come back from the decoder (errors="surrogateescape") as U+DC80..U+DCFF.
_BAD_BYTE = re.compile("[\udc80-\udcff]")

Row = tuple[int, Any, str]
# A jsonl line this long is skipped as one bad row, read past in pieces: no row of ranked text is near it, and
# parsing and tokenizing a line of tens of megabytes takes minutes.
MAX_LINE_CHARS = 8 * 2**20
LINE_TOO_LONG = "line too long (8 MiB or more)"


@dataclass(frozen=True)
class BadRow:
    """A row whose bytes could not be read: ``reason`` is its skip reason, ``detail`` says more for messages."""

    reason: str
    detail: str = ""


def read_rows(source: str | os.PathLike[str], split: str = "train") -> Iterator[Row]:
    """Every row of ``source``; see the module docstring. Raises ``DataError`` for a source that cannot be read."""
    name = os.fspath(source)
    if not name.strip():  # Path("") is the working directory: never read it by accident
        raise DataError("no data source given (an empty path)")
    path = Path(source).expanduser()
    if path.is_file():
        return ((n, row, "") for n, row in file_rows(path))
    if path.is_dir():
        return _dir_rows(path, split)
    if isinstance(source, os.PathLike) or not _HUB_NAME.fullmatch(name) or name.lower().endswith(SUFFIXES):
        raise DataError(f"no such file: {name}")
    return _dataset_rows(name, split)


def file_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of one local file, by its suffix."""
    lower = path.name.lower()
    if lower.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl_rows(path)
    if lower.endswith((".json", ".json.gz")):
        return _json_rows(path)
    if lower.endswith(".parquet"):
        return _parquet_rows(path)
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(SUFFIXES)}")


# ---------------------------------------------------------------------------------------------
# text files


class _Gunzip(io.RawIOBase):
    """A gzip stream (one or more members, RFC 1952) decompressed at most ``STEP`` bytes at a time.

    ``gzip.GzipFile`` decompresses in larger blocks and a stream error loses the whole block; here a stream
    that breaks mid-file has returned everything before the break. Errors: ``zlib.error`` for corrupt data
    (a bad CRC too), ``EOFError`` for a stream cut short, ``gzip.BadGzipFile`` for trailing garbage.
    """

    STEP = 1024

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp
        self._z: Any = None  # the decompressor of the current member; None between members
        self._in = b""

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        data = self._fp.read(64 * 1024)
        self._in += data
        return bool(data)

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._z is None:  # between members: another member, zero padding, or the end
                self._in = self._in.lstrip(b"\0")
                if len(self._in) < 2 and not self._more():
                    if self._in:
                        raise gzip.BadGzipFile("trailing garbage after the compressed data")
                    return 0
                if len(self._in) < 2:
                    continue
                if self._in[:2] != _GZIP_MAGIC:
                    raise gzip.BadGzipFile("trailing garbage after the compressed data")
                self._z = zlib.decompressobj(wbits=31)
            if not self._in and not self._more():
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out = self._z.decompress(self._in, min(len(buffer), self.STEP))
            if self._z.eof:
                self._in, self._z = self._z.unused_data, None
            else:
                self._in = self._z.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    """``path`` as text: gunzipped when it starts with the gzip magic (whatever its suffix), decoded as UTF-8
    (a BOM is dropped) or as UTF-16 when it starts with that BOM. Lines end at ``\\n`` only, so a ``\\r`` or
    U+2028 inside a row does not split it; bytes that are not valid text come back as U+DC80..U+DCFF."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    with raw:
        try:
            stream: Any = io.BufferedReader(_Gunzip(raw)) if raw.peek(2)[:2] == _GZIP_MAGIC else raw
            head = stream.peek(4)[:4]
        except (OSError, EOFError, zlib.error) as e:  # a gzip header or first block that is broken
            what = "truncated" if isinstance(e, EOFError) else "corrupt"
            raise DataError(f"{path}: cannot read: {what} compressed stream ({e})") from e
        encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
        yield io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="\n")


def _lines(path: Path, limit: int | None = None) -> Iterator[tuple[int, str | BadRow]]:
    """``(0-based line number, line)`` for every line; a compressed stream that breaks after some lines ends
    with one ``BadRow`` (the lines before it are kept); one that breaks before any line is a ``DataError``. With
    ``limit``, a line of ``limit`` characters or more is read past in pieces and is a ``BadRow`` (never held)."""
    n = -1
    with _open_text(path) as f:
        try:
            while line := f.readline(limit or -1):
                n += 1
                if limit and len(line) >= limit and not line.endswith("\n"):
                    while (rest := f.readline(limit)) and not rest.endswith("\n"):
                        pass
                    yield n, BadRow(LINE_TOO_LONG, f"line {n + 1} has {limit} characters or more")
                    continue
                yield n, line
            return
        except EOFError as e:
            reason, error = "truncated compressed stream", e
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile (trailing garbage) is an OSError
            reason, error = "corrupt compressed stream", e
    if n < 0:
        raise DataError(f"{path}: cannot read: {reason} ({error})") from error
    log.warning("%s: %s after line %d (%s); the rows before it are kept", path, reason, n + 1, error)
    yield n + 1, BadRow(reason, str(error))


def _parse(line: str) -> Any:
    """One jsonl line as JSON, or the ``BadRow`` it is."""
    if not line.isascii() and _BAD_BYTE.search(line):
        return BadRow("invalid utf-8")
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        return BadRow("invalid json")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    for n, line in _lines(path, MAX_LINE_CHARS):
        if isinstance(line, BadRow):
            yield n, line
        elif line.strip():
            yield n, _parse(line)


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """One JSON document (a list of rows or one row) when the whole file parses as one, else jsonl."""
    lines = list(_lines(path))
    if lines and not isinstance(lines[-1][1], BadRow):
        text = "".join(line for _, line in lines)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            rows = data if isinstance(data, list) else [data]
            bad_bytes = not text.isascii() and _BAD_BYTE.search(text) is not None
            for n, row in enumerate(rows):
                yield n, BadRow("invalid utf-8") if bad_bytes and _has_bad_bytes(row) else row
            return
    for n, line in lines:
        if isinstance(line, BadRow):
            yield n, line
        elif line.strip():
            yield n, _parse(line)


def _has_bad_bytes(value: Any) -> bool:
    """Whether any string in a parsed JSON value holds a byte that was not UTF-8 (walked without recursion)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _BAD_BYTE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


# ---------------------------------------------------------------------------------------------
# parquet


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a parquet file, one row group at a time; a row group that cannot be decoded is one ``BadRow``
    (its row numbers are still counted, so later rows keep their numbers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq  # a dependency of `datasets`

    errors = (pa.ArrowException, OSError, ValueError, TypeError, NotImplementedError, IndexError)
    try:
        f = pq.ParquetFile(path)
        sizes = [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)]
    except errors as e:  # not parquet, a broken footer, ...
        raise DataError(f"{path}: cannot read parquet: {_one_line(e)}") from e
    n = 0
    for g, size in enumerate(sizes):
        end, done = n + size, n
        try:
            for batch in f.iter_batches(batch_size=1024, row_groups=[g]):
                for row in _batch_rows(batch, errors):
                    yield done, row
                    done += 1
        except errors as e:
            log.warning("%s: row group %d cannot be read (%s); skipped", path, g, _one_line(e))
            yield done, BadRow("corrupt parquet data", _one_line(e))
        n = end


def _batch_rows(batch: Any, errors: tuple[type[BaseException], ...]) -> list[Any]:
    """A record batch as dicts; when the batch as a whole does not convert, row by row (a bad row is a BadRow)."""
    try:
        return batch.to_pylist()
    except errors:
        out: list[Any] = []
        for i in range(batch.num_rows):
            try:
                out.append(batch.slice(i, 1).to_pylist()[0])
            except UnicodeDecodeError:
                out.append(BadRow("invalid utf-8"))
            except errors as e:
                out.append(BadRow("corrupt parquet data", _one_line(e)))
        return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---------------------------------------------------------------------------------------------
# directories and the hub


def _dir_files(path: Path, split: str) -> list[Path]:
    """The data files of ``split`` in a directory, sorted. Files are assigned to splits by name as
    ``datasets`` does (``train.jsonl``, ``data/test-00000.parquet``; no split names: all are ``train``);
    hidden files are left out."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except EmptyDatasetError as e:
        raise DataError(f"{path}: no data files in this directory ({', '.join(SUFFIXES)})") from e
    if split not in found:
        raise DataError(f"{path}: no {split!r} split in this directory (splits by file name: {sorted(found)})")
    files = sorted(Path(p) for p in found[split])
    data = [p for p in files if p.name.lower().endswith(SUFFIXES)]
    other = [p.relative_to(path).as_posix() for p in files if p not in data and not p.name.lower().endswith(".md")]
    if not data:
        raise DataError(f"{path}: no data files ({', '.join(SUFFIXES)}) for split {split!r} in this directory"
                        + (f"; found {', '.join(other[:5])}" if other else ""))
    if other:
        log.warning("%s: ignoring %d files of other types: %s", path, len(other), ", ".join(other[:5]))
    return data


def _dir_rows(path: Path, split: str) -> Iterator[Row]:
    """The rows of every data file of a directory in order, numbered on from one file to the next; a file
    that cannot be read at all is one ``BadRow`` ("unreadable file") and a warning."""
    offset = 0
    for file in _dir_files(path, split):
        rel = file.relative_to(path).as_posix()
        last = -1
        try:
            for n, row in file_rows(file):
                last = n
                yield offset + n, row, f" ({rel}:{n + 1})"
        except DataError as e:
            log.warning("%s", e)
            last += 1
            yield offset + last, BadRow("unreadable file", str(e)), f" ({rel})"
        offset += last + 1


def _dataset_rows(name: str, split: str) -> Iterator[Row]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as e:  # connection, not found, bad split, ...: all mean "cannot read this source"
        raise DataError(f"cannot load dataset {name!r} from the hub (offline?): {type(e).__name__}: {e}") from e
    for n, row in enumerate(data):
        yield n, row, ""
