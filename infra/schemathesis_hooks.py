"""Schemathesis hooks for infra/schemathesis.sh, applied to every request
before it is sent (Schemathesis then revalidates it against the spec).

1. Generated Idempotency-Keys and payment references are short and repeat
   across operations ("0", "A", ...); the ledger rightly answers a reused key
   with a 422 and a reused payment reference with a 409, so most mutations
   would never get past that. A valid one gets a suffix unique to the run.
2. A few rules join several parameters, or a parameter and the caller,
   which OpenAPI cannot state (the spec says each in words): a generated
   request that breaks one is mended, so it is as valid as Schemathesis
   thinks it is. Invalid values are sent as generated.
"""

import datetime
import os
import re
import uuid

import schemathesis

KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]{1,255}")
REFERENCE = re.compile(r"[\x21-\x7e]{1,255}")
CURSOR = re.compile(r"[A-Za-z0-9_-]+")
USER = re.compile(r"(?!\.+$)[A-Za-z0-9_.:@|-]{1,128}")
# Unique to this run: the script runs Schemathesis once per caller against
# one stack, with the same seed, so the same keys come up again.
RUN = uuid.uuid4().hex[:8]
_serial = 0


def _unique(value):
    """The value with a suffix unique to the run, within the 255 characters both allow."""
    global _serial
    _serial += 1
    suffix = f"~{RUN}.{_serial}"
    return value[: 255 - len(suffix)] + suffix


def _day(text):
    try:
        return datetime.date.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _instant(text, end_of_day):
    """An RFC 3339 instant or a UTC day (`to` a day: through its end), as the ledger reads them."""
    day = _day(text) if isinstance(text, str) and len(text) == 10 else None
    if day is not None:
        start = datetime.datetime.combine(day, datetime.time(), datetime.timezone.utc)
        return start + datetime.timedelta(days=1) if end_of_day else start
    try:
        at = datetime.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return at if at.tzinfo is not None else None


def _history_filter(query):
    """GET /ledger and POST /exports: one of action, user, campaign; `from` before `to`."""
    for name in [n for n in ("action", "user", "campaign") if n in query][1:]:
        query.pop(name)
    start, end = _instant(query.get("from"), False), _instant(query.get("to"), True)
    if start is not None and end is not None and start >= end:
        query.pop("to")


def _report_range(query):
    """GET /roi and /usage: 1-366 days, `from` through `to`."""
    start, end = _day(query.get("from")), _day(query.get("to"))
    if start is not None and end is not None and not (0 <= (end - start).days <= 365):
        query["to"] = query["from"]


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    headers = case.headers if case.headers is not None else {}
    body = case.body
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and KEY.fullmatch(key):
        headers["Idempotency-Key"] = _unique(key)
    # The key is optional only for a dry run.
    if path in ("/v1/orgs/{org}/spend", "/v1/orgs/{org}/reservations") and "Idempotency-Key" not in headers:
        if isinstance(body, dict) and body.get("dry_run") is not True:
            headers["Idempotency-Key"] = _unique("k")
    case.headers = headers
    # A user's token acts for its own user only (naming another is a 403).
    me = os.environ.get("LEDGER_USER")
    if me and isinstance(body, dict) and isinstance(body.get("user"), str) and USER.fullmatch(body["user"]):
        body["user"] = me
    if isinstance(body, dict):
        reference = body.get("payment_reference")
        if isinstance(reference, str) and REFERENCE.fullmatch(reference):
            body["payment_reference"] = _unique(reference)
    query = case.query
    if isinstance(query, dict):
        # An opaque cursor is only ever one the API handed out.
        if isinstance(query.get("cursor"), str) and CURSOR.fullmatch(query["cursor"]):
            query.pop("cursor")
        if path in ("/v1/orgs/{org}/ledger", "/v1/orgs/{org}/exports"):
            _history_filter(query)
            # A member's history is their own: filtered by time only.
            if os.environ.get("LEDGER_CALLER") == "member":
                for name in ("action", "user", "campaign"):
                    query.pop(name, None)
        if path in ("/v1/orgs/{org}/roi", "/v1/orgs/{org}/usage"):
            _report_range(query)
        if path == "/v1/orgs/{org}/balance" and me and isinstance(query.get("user"), str) and USER.fullmatch(query["user"]):
            query["user"] = me
