"""The benchmark's files, made with the project's generator.

bulkflow reads them as they are; PostgreSQL's COPY gets the same rows, in the same CSV,
except for `tags`, which COPY wants as an array literal (`{"news","t3"}`) where our files
carry JSON (`["news","t3"]`). Every row has its id (COPY has no natural-key fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from files.generate import BROKEN_RULE, GeneratorSpec, generate, write_file


@dataclass(frozen=True)
class BenchFile:
    resource: str
    rows: int
    ours: Path
    """What `bulkflow import` reads."""
    copy: Path
    """What `\\copy` reads: the same rows (valid ones only for the invalid variant)."""


def prepare(
    folder: Path, resource: str, rows: int, *, users: int, articles: int, invalid_share: float = 0.0
) -> BenchFile:
    """Write (once) the files of one workload under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = f"-{int(invalid_share * 100)}pct-invalid" if invalid_share else ""
    ours = folder / f"{resource}-{rows}{suffix}.csv"
    spec = GeneratorSpec(resource, rows, invalid_share, users=users, articles=articles, id_less_rows=False)
    if not ours.exists():
        write_file(spec, ours)
    if invalid_share:
        return BenchFile(resource, rows, ours, prepare(folder, resource, rows, users=users, articles=articles).copy)
    if resource != "articles":
        return BenchFile(resource, rows, ours, ours)
    copy = folder / f"{resource}-{rows}.copy.csv"
    if not copy.exists():
        frame = generate(spec).drop(BROKEN_RULE)
        quoted = pl.col("tags").list.eval(pl.format('"{}"', pl.element())).list.join(",")
        array = pl.concat_str(pl.lit("{"), quoted, pl.lit("}"))
        frame.with_columns(array.alias("tags")).write_csv(copy, line_terminator="\r\n")
    return BenchFile(resource, rows, ours, copy)


def header(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return fh.readline().strip().split(",")


PARTNER_PROFILE = "bench-excel-de"
"""The profile the partner-shaped variant is read with (`partner_variant`)."""


def partner_variant(file: BenchFile, profiles: Path) -> Path:
    """The users file as a German Excel export writes it: a `sep=;` line, `;`, Windows-1252
    with umlauts in the names; and its profile in `profiles`. The rows are those of the
    plain file (its fields hold no `,` or `;`, so the delimiter is swapped as text)."""
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / f"{PARTNER_PROFILE}.yaml").write_text("resource: users\ndelimiter: auto\nencoding: cp1252\n")
    variant = file.ours.with_name(file.ours.stem + "-excel-de.csv")
    if not variant.exists():
        with file.ours.open(encoding="utf-8") as plain, variant.open("w", encoding="cp1252", newline="") as out:
            out.write("sep=;\r\n")
            for line in plain:
                out.write(line.replace(",", ";").replace("User ", "Jörg Größe "))
    return variant


def upsert_variant(folder: Path, rows: int) -> BenchFile:
    """The everyday upsert: `rows` users into a table holding the first `rows` users of the
    plain file; the second half of those comes back with a changed name, and as many new
    users follow. COPY reads the same file (into a temporary table, then upserts)."""
    path = folder / f"users-{rows}-upsert.csv"
    if not path.exists():
        spec = GeneratorSpec("users", rows + rows // 2, 0.0, id_less_rows=False)
        frame = generate(spec).drop(BROKEN_RULE).slice(rows - rows // 2, rows)
        changed = pl.int_range(pl.len()) < rows // 2
        renamed = pl.when(changed).then(pl.format("{} (renamed)", pl.col("name"))).otherwise(pl.col("name"))
        frame.with_columns(renamed.alias("name")).write_csv(path, line_terminator="\r\n")
    return BenchFile("users", rows, path, path)
