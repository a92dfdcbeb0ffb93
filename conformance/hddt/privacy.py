"""The privacy scans run after the tests.

* The database of a server the runner started is searched for KVNR-shaped
  values (the German health insurance number: one capital letter and nine
  digits, the last a check digit). Neither a DDR nor a DiGA may learn a KVNR
  [HDDT "Identification and Authentication of the Patient"], so none may be
  stored.
* Everything the DiGA saw during the run (every response's status, headers
  and body, and the redirect URLs of the consent step) is searched for the
  test patients' UIDs, emails and names [digest §1 Tokens, §4 General].
"""

import re
import sqlite3

KVNR_SHAPE = re.compile(rb"(?<![A-Za-z0-9])([A-Z][0-9]{9})(?![A-Za-z0-9])")


def kvnr_check_digit_ok(candidate):
    """Whether ``candidate`` (e.g. ``A123456780``) has a valid KVNR check digit.

    The letter becomes its two-digit position in the alphabet (A = 01); with
    the first eight digits that gives ten digits, weighted 1, 2, 1, 2, …; the
    digit sums of the products, added, modulo 10 give the check digit.
    """
    letter = ord(candidate[0]) - ord("A") + 1
    digits = f"{letter:02d}" + candidate[1:9]
    total = 0
    for index, char in enumerate(digits):
        product = int(char) * (1 if index % 2 == 0 else 2)
        total += product // 10 + product % 10
    return total % 10 == int(candidate[9])


def kvnr_hits(data):
    """The KVNR-shaped values with a valid check digit in ``data`` (bytes)."""
    hits = []
    for match in KVNR_SHAPE.finditer(data):
        candidate = match.group(1).decode()
        if kvnr_check_digit_ok(candidate):
            hits.append(candidate)
    return hits


def _as_bytes(value):
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


def scan_sqlite(path):
    """KVNR hits in every column of every table of the SQLite file ``path``.

    Returns ``(rows_scanned, hits)`` with hits as ``table.column: value``.
    """
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        rows, hits = 0, []
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                rows += 1
                for column, value in zip(columns, row):
                    for hit in kvnr_hits(_as_bytes(value)):
                        hits.append(f"{table}.{column}: {hit}")
        return rows, hits
    finally:
        connection.close()


def scan_postgres(url):
    """KVNR hits in every table of the PostgreSQL database at ``url``.

    Every row is read as its text form (``t::text``), which includes bytea
    columns as hex; hex cannot hold a capital letter followed by digits that
    is not also visible in the text, so nothing is missed for KVNRs stored as
    text. Returns ``(rows_scanned, hits)``.
    """
    import urllib.parse

    import pg8000.dbapi

    parsed = urllib.parse.urlparse(url)
    connection = pg8000.dbapi.connect(
        user=urllib.parse.unquote(parsed.username or "postgres"),
        password=urllib.parse.unquote(parsed.password) if parsed.password else None,
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        database=parsed.path.lstrip("/") or "postgres",
    )
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        tables = cursor.fetchall()
        rows, hits = 0, []
        for schema, table in tables:
            cursor.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
            for (text,) in cursor.fetchall():
                rows += 1
                for hit in kvnr_hits(_as_bytes(text)):
                    hits.append(f"{schema}.{table}: {hit}")
        return rows, hits
    finally:
        connection.close()


def identity_hits(records, identities):
    """Which of ``identities`` (label → value) occur in the DiGA-visible records.

    ``records`` is a list of ``(where, text)``; matching ignores case. Returns
    ``label 'value' in where`` lines.
    """
    hits = []
    for label, value in identities.items():
        if not value:
            continue
        needle = value.lower()
        for where, text in records:
            if needle in text.lower():
                hits.append(f"{label} {value!r} in {where}")
    return hits
