"""History events to plain JSON and back, so ``history.json`` can be checked again later
(``chaos.checker.check(load_events(...))`` gives the same report).

Values and keys are the workload's bytes, written as text (the chaos workload only makes
ASCII values) and read back as bytes; ``str`` values stay ``str`` when ``as_bytes=False``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from chaos.history import (
    FAILED,
    UNKNOWN,
    Acked,
    Assign,
    Commit,
    Event,
    FinalRead,
    MalformedHistoryError,
    Poll,
    Rebalance,
    Records,
    Seek,
    Send,
)

__all__ = ["event_from_json", "event_to_json", "events_from_json", "events_to_json"]


def _text(value: Hashable) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if value is None or isinstance(value, str | int | float):
        return value
    return repr(value)


def _records_to_json(records: Records) -> list[Any]:
    return [[t, p, [[o, _text(v)] for o, v in recs]] for (t, p), recs in records.items()]


def _parts(parts: Iterable[tuple[str, int]] | None) -> list[list[Any]] | None:
    return None if parts is None else sorted([t, p] for t, p in parts)


def event_to_json(e: Event) -> dict[str, Any]:
    if isinstance(e, Send):
        out: dict[str, Any] = {
            "type": "send",
            "process": e.process,
            "topic": e.topic,
            "key": _text(e.key),
            "value": _text(e.value),
            "invoked_at": e.invoked_at,
            "completed_at": e.completed_at,
        }
        if isinstance(e.outcome, Acked):
            out.update(outcome="ok", partition=e.outcome.partition, offset=e.outcome.offset)
        else:
            out["outcome"] = e.outcome.value
        return out
    if isinstance(e, Poll | FinalRead):
        return {
            "type": "poll" if isinstance(e, Poll) else "final-read",
            "process": e.process,
            "invoked_at": e.invoked_at,
            "completed_at": e.completed_at,
            "records": _records_to_json(e.records),
        }
    if isinstance(e, Commit):
        return {
            "type": "commit",
            "process": e.process,
            "group": e.group,
            "invoked_at": e.invoked_at,
            "completed_at": e.completed_at,
            "offsets": [[t, p, o] for (t, p), o in e.offsets.items()],
        }
    if isinstance(e, Seek):
        return {
            "type": "seek",
            "process": e.process,
            "at": e.at,
            "topic": e.topic,
            "partition": e.partition,
            "offset": e.offset,
        }
    if isinstance(e, Rebalance):
        return {
            "type": "rebalance",
            "process": e.process,
            "at": e.at,
            "partitions": _parts(e.partitions),
            "group": e.group,
        }
    return {"type": "assign", "process": e.process, "at": e.at, "partitions": _parts(e.partitions)}


def events_to_json(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [event_to_json(e) for e in events]


def _value(raw: Any, as_bytes: bool) -> Hashable:
    if isinstance(raw, str) and as_bytes:
        return raw.encode()
    if raw is None or isinstance(raw, str | int | float):
        return raw
    raise MalformedHistoryError(f"not a value: {raw!r}")


def _records(raw: Sequence[Any], as_bytes: bool) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {
        (str(t), int(p)): tuple((int(o), _value(v, as_bytes)) for o, v in recs)
        for t, p, recs in raw
    }


def _frozen(raw: Sequence[Sequence[Any]] | None) -> frozenset[tuple[str, int]] | None:
    return None if raw is None else frozenset((str(t), int(p)) for t, p in raw)


def event_from_json(obj: Mapping[str, Any], *, as_bytes: bool = True) -> Event:
    try:
        kind = obj["type"]
        if kind == "send":
            outcome = obj["outcome"]
            result = (
                Acked(int(obj["offset"]), int(obj["partition"]))
                if outcome == "ok"
                else {"failed": FAILED, "unknown": UNKNOWN}[outcome]
            )
            return Send(
                int(obj["process"]),
                str(obj["topic"]),
                _value(obj["key"], as_bytes),
                _value(obj["value"], as_bytes),
                float(obj["invoked_at"]),
                None if obj["completed_at"] is None else float(obj["completed_at"]),
                result,
            )
        if kind in ("poll", "final-read"):
            cls = Poll if kind == "poll" else FinalRead
            return cls(
                int(obj["process"]),
                float(obj["invoked_at"]),
                float(obj["completed_at"]),
                _records(obj["records"], as_bytes),
            )
        if kind == "commit":
            return Commit(
                int(obj["process"]),
                str(obj["group"]),
                float(obj["invoked_at"]),
                float(obj["completed_at"]),
                {(str(t), int(p)): int(o) for t, p, o in obj["offsets"]},
            )
        if kind == "seek":
            offset = obj["offset"]
            return Seek(
                int(obj["process"]),
                float(obj["at"]),
                str(obj["topic"]),
                int(obj["partition"]),
                None if offset is None else int(offset),
            )
        if kind == "rebalance":
            return Rebalance(
                int(obj["process"]), float(obj["at"]), _frozen(obj["partitions"]), obj["group"]
            )
        if kind == "assign":
            return Assign(
                int(obj["process"]), float(obj["at"]), _frozen(obj["partitions"]) or frozenset()
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedHistoryError(f"bad event {obj!r}: {exc!r}") from exc
    raise MalformedHistoryError(f"unknown event type {obj.get('type')!r}")


def events_from_json(objs: Iterable[Mapping[str, Any]], *, as_bytes: bool = True) -> list[Event]:
    return [event_from_json(o, as_bytes=as_bytes) for o in objs]
