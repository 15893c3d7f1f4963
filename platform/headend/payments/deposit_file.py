"""Reading a deposit file: the CSV a bank, a lockbox service or a spreadsheet gives staff.

    account,amount,method,date,reference,memo,transaction_id
    100042,49.99,check,2026-11-02,1042,,
    100043,25,cash,2026-11-02,,counter,

`account` is the subscriber's account number (or a `subscriber_id` column their id); `amount` is
in the tenant's currency ("49.99", never rounded: more places than the currency has is an
error); `method` is cash, check, bank_transfer or other (a `--method` default fills blanks);
`date` is YYYY-MM-DD. `transaction_id` is optional: without it a line's id is derived from the
file's bytes and its line number, so importing the same file twice posts it once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

from sqlalchemy.orm import Session

from headend.errors import ValidationFailed
from headend.money import exponent, parse_decimal, to_minor
from headend.payments.batch import (
    CHUNK,
    BatchResult,
    PaymentLine,
    check_lines,
    line_transaction_id,
    receive_payments,
)
from headend.payments.services import _currency

COLUMNS = ("account", "subscriber_id", "amount", "method", "date", "reference", "memo",
           "transaction_id")
MAX_BYTES = 5 * 1024 * 1024


def _amount(text: str, currency: str) -> int:
    number = parse_decimal(text, places=exponent(currency))
    if number <= 0:
        raise ValueError("must be more than zero")
    return to_minor(Decimal(number), currency)


def _field(row: dict, name: str) -> str:
    return (row.get(name) or "").strip()


def read_deposit_file(data: bytes, currency: str, default_method: str | None = None
                      ) -> tuple[list[PaymentLine], list[int]]:
    """The file's payments and the file line each came from, or ValidationFailed naming each
    bad line and column ("line 3: amount")."""
    if len(data) > MAX_BYTES:
        raise ValidationFailed({"file": f"is larger than {MAX_BYTES // 1024 // 1024} MB"})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed({"file": "must be a UTF-8 CSV file"}) from None
    reader = csv.DictReader(io.StringIO(text))
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    reader.fieldnames = header
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in ("amount", "date") if name not in header]
    if "account" not in header and "subscriber_id" not in header:
        missing.insert(0, "account")
    if unknown or missing:
        raise ValidationFailed({"file": (
            (f"unknown columns: {', '.join(unknown)}. " if unknown else "")
            + (f"missing columns: {', '.join(missing)}. " if missing else "")
            + f"Columns: {', '.join(COLUMNS)}").strip()})
    lines, numbers, errors = [], [], {}
    for row in reader:
        line_no = reader.line_num
        problems, values = {}, {}
        try:
            values["amount"] = _amount(_field(row, "amount"), currency)
        except ValueError as exc:
            problems["amount"] = str(exc)
        try:
            values["received_on"] = dt.date.fromisoformat(_field(row, "date"))
        except ValueError:
            problems["date"] = "must be a date (YYYY-MM-DD)"
        subscriber = _field(row, "subscriber_id")
        if subscriber and not subscriber.isdigit():
            problems["subscriber_id"] = "must be a number"
        if problems:
            errors.update({f"line {line_no}: {k}": v for k, v in problems.items()})
            continue
        numbers.append(line_no)
        lines.append(PaymentLine(
            amount=values["amount"], method=_field(row, "method") or default_method or "",
            received_on=values["received_on"],
            subscriber_id=int(subscriber) if subscriber else None,
            account=_field(row, "account") or None,
            reference=_field(row, "reference") or None, memo=_field(row, "memo") or None,
            transaction_id=_field(row, "transaction_id") or line_transaction_id(data, line_no)))
    if errors:
        raise ValidationFailed(errors)
    if not lines:
        raise ValidationFailed({"file": "has no payment lines"})
    return lines, numbers


def import_deposit_file(session: Session, data: bytes, *, default_method: str | None = None,
                        allow_archived: bool = False, progress=None, after_chunk=None
                        ) -> BatchResult:
    """Post a deposit file: every line is checked first (a bad line anywhere posts nothing and
    the error names its file line), then chunks of `CHUNK` payments are posted, each followed by
    `after_chunk` (the CLI commits there, so a crash mid-file keeps what was posted and a rerun
    of the same file posts only the rest). `progress(n)` is told the lines done."""
    lines, numbers = read_deposit_file(data, _currency(session), default_method)
    try:
        check_lines(session, lines, allow_archived)
    except ValidationFailed as exc:
        raise ValidationFailed(_by_file_line(exc.errors, numbers)) from None
    results = []
    for start in range(0, len(lines), CHUNK):
        results.append(receive_payments(session, lines[start:start + CHUNK],
                                        allow_archived=allow_archived))
        if after_chunk is not None:
            after_chunk()
        if progress is not None:
            progress(len(lines[start:start + CHUNK]))
    return BatchResult.combine(results)


def _by_file_line(errors: dict[str, list[str]], numbers: list[int]) -> dict[str, list[str]]:
    """"lines.3.amount" (the fourth payment) as "line 5: amount" (its line in the file)."""
    out = {}
    for key, reasons in errors.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "lines" and parts[1].isdigit():
            key = f"line {numbers[int(parts[1])]}: {parts[2]}"
        out[key] = reasons
    return out
