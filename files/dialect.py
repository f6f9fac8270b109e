"""A CSV file's dialect as the readers use it: the delimiter (given, from Excel's `sep=`
line, or sniffed) and the quote, resolved once per file while staging.

Sniffing looks at the header and the first records only, and decides only when exactly
one candidate fits: it splits the header into the resource's columns, and every sampled
record into as many fields as the header. Anything else is a refusal that says what to pass.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bulkflow.errors import InputError
from files.records import csv_fields, split_records

SNIFFED_DELIMITERS = (",", ";", "\t", "|")
SAMPLE_BYTES = 1 << 16
SAMPLE_RECORDS = 100
_SEP_LINE = re.compile(rb"^(?:\xef\xbb\xbf)?sep=(.)\r?\n", re.IGNORECASE)

DelimiterSource = Literal["default", "given", "file name", "sep line", "sniffed"]


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is written, resolved against the file."""

    delimiter: str = ","
    quote: str = '"'
    delimiter_from: DelimiterSource = "default"
    sep_line: bool = False
    """Whether the file starts with Excel's `sep=X` line (skipped: the header comes after)."""

    @property
    def quote_byte(self) -> bytes:
        return self.quote.encode()

    def fields(self, text: str) -> list[str]:
        """One record's fields (csv.Error when its quoting is broken)."""
        return csv_fields(text, self.delimiter, self.quote)


def describe_delimiter(delimiter: str) -> str:
    return {"\t": "tab", " ": "space"}.get(delimiter, repr(delimiter))


def resolve_dialect(
    path: Path,
    source: str,
    delimiter: str,
    quote: str,
    fits_header: Callable[[list[str]], bool],
    named_tsv: bool = False,
) -> CsvDialect:
    """The dialect of the UTF-8 CSV file at `path`: `delimiter` as given (`auto`: sniffed
    with `fits_header` saying whether a split header names the resource's columns; the
    default `,` is a tab for a file named `.tsv`)."""
    with open(path, "rb") as stream:
        head = stream.read(SAMPLE_BYTES)
    sep = _SEP_LINE.match(head)
    if sep is not None:
        said = sep.group(1).decode("utf-8", errors="replace")
        if delimiter not in ("auto", ",", said):
            raise InputError(f"{source} says sep={said} on its first line, but the delimiter given is {delimiter!r}")
        return CsvDialect(said, quote, "sep line", sep_line=True)
    if delimiter == "," and named_tsv:
        return CsvDialect("\t", quote, "file name")
    if delimiter != "auto":
        return CsvDialect(delimiter, quote, "default" if delimiter == "," else "given")
    return CsvDialect(_sniff(head, source, quote, fits_header), quote, "sniffed")


def _sniff(head: bytes, source: str, quote: str, fits_header: Callable[[list[str]], bool]) -> str:
    records = [
        record.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
        for _, record in split_records(head, 1, quote.encode())
    ]
    if len(head) == SAMPLE_BYTES and len(records) > 1:
        records.pop()  # cut short by the sample
    records = [r for r in records[: SAMPLE_RECORDS + 1] if r]
    if not records:
        raise InputError(f"{source} is empty: nothing to import")
    fitting = [d for d in SNIFFED_DELIMITERS if d in records[0] and _fits(records, d, quote, fits_header)]
    if len(fitting) == 1:
        return fitting[0]
    tried = ", ".join(map(describe_delimiter, SNIFFED_DELIMITERS))
    if not fitting:
        raise InputError(
            f"{source}: cannot tell the delimiter: none of {tried} splits the header into the resource's columns "
            "and every record into as many fields: pass --delimiter"
        )
    both = " and ".join(map(describe_delimiter, fitting))
    raise InputError(
        f"{source}: cannot tell the delimiter: {both} both fit the header and the records: pass --delimiter"
    )


def _fits(records: list[str], delimiter: str, quote: str, fits_header: Callable[[list[str]], bool]) -> bool:
    try:
        header = csv_fields(records[0], delimiter, quote)
        counts = {len(csv_fields(record, delimiter, quote)) for record in records[1:]}
    except csv.Error:
        return False
    return fits_header(header) and counts <= {len(header)}
