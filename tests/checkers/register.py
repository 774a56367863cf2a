"""A linearizability checker for one register: history model, sequential specs, search.

Owns: the history model (``Operation``, ``HistoryRecorder``), two sequential specs (a plain
value register with compare-and-set, and a versioned znode register whose compare-and-set
is ZooKeeper's ``setData(path, data, version)``), and the Wing & Gong search with Lowe's
memoisation of visited (linearized-set, state) configurations (as in Knossos and
porcupine). Pure and synchronous: it never imports trio and never does I/O, so a test
records a history however it likes and checks it afterwards.

Operations whose outcome is unknown (a timeout or a lost connection: Jepsen's "info") have
``completed_at=None``; the search may linearize them at any point after their invocation,
or never. "Never" is the same as "after every completed operation", which is why the search
stops as soon as every completed operation is placed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

__all__ = [
    "UNOBSERVED",
    "CheckResult",
    "HistoryRecorder",
    "MalformedHistoryError",
    "OpKind",
    "Operation",
    "PlainRegister",
    "RegisterSpec",
    "Unobserved",
    "Verdict",
    "ZnodeRegister",
    "ZnodeState",
    "cas",
    "check",
    "read",
    "write",
]

S = TypeVar("S", bound=Hashable)


class MalformedHistoryError(ValueError):
    """The history itself is wrong (completion before invocation, bad cas arguments, ...)."""


class OpKind(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call, from invocation to completion.

    ``arg``: write -> the value written; cas -> ``(expected, new)`` where ``expected`` is the
    expected value (plain register) or the expected version (znode register, -1 = any);
    read -> None. ``result``: read -> the value seen (a ``(version, data)`` pair for the
    znode register); cas -> True if it took effect, False if it was refused (BadVersion);
    write -> ignored. ``completed_at is None`` means the outcome is unknown and ``result``
    is ignored.
    """

    process: int
    kind: OpKind
    arg: Hashable
    invoked_at: float
    completed_at: float | None
    result: Hashable = None

    @property
    def pending(self) -> bool:
        return self.completed_at is None

    def __str__(self) -> str:
        what = {OpKind.READ: "read", OpKind.WRITE: f"write({self.arg!r})"}.get(
            self.kind, f"cas{self.arg!r}"
        )
        if self.completed_at is None:
            return f"p{self.process} {what} [{self.invoked_at}..?]"
        outcome = "" if self.kind is OpKind.WRITE else f" -> {self.result!r}"
        return f"p{self.process} {what}{outcome} [{self.invoked_at}..{self.completed_at}]"


def read(
    process: int, invoked_at: float, completed_at: float | None, value: Hashable = None
) -> Operation:
    return Operation(process, OpKind.READ, None, invoked_at, completed_at, value)


def write(
    process: int, value: Hashable, invoked_at: float, completed_at: float | None
) -> Operation:
    return Operation(process, OpKind.WRITE, value, invoked_at, completed_at)


def cas(
    process: int,
    expected: Hashable,
    new: Hashable,
    invoked_at: float,
    completed_at: float | None,
    ok: bool | None = None,
) -> Operation:
    return Operation(process, OpKind.CAS, (expected, new), invoked_at, completed_at, ok)


class Unobserved(enum.Enum):
    """Stands for every written value that no read and no cas in the history compares to.

    Such values are indistinguishable to the spec, so collapsing them shrinks the search
    without changing the verdict.
    """

    VALUE = "unobserved"

    def __repr__(self) -> str:
        return "<unobserved>"


UNOBSERVED: Final = Unobserved.VALUE


class RegisterSpec(Protocol[S]):
    """A deterministic sequential specification.

    ``step`` applies ``op`` to ``state`` and says whether ``op``'s recorded result is what
    the register would have answered. For a pending op (unknown result) it must return
    True: the op either took effect or not, and the state after it is determined.
    ``canonical`` rewrites written values that nothing in ``ops`` can observe to
    ``UNOBSERVED`` (one op out per op in, same order); returning ``ops`` is always correct.
    """

    def initial_state(self) -> S: ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]: ...

    def canonical(self, ops: Sequence[Operation]) -> list[Operation]: ...


def _replace_unobserved(ops: Sequence[Operation], observed: set[Hashable]) -> list[Operation]:
    out: list[Operation] = []
    for op in ops:
        if op.kind is OpKind.WRITE and op.arg not in observed:
            op = Operation(op.process, op.kind, UNOBSERVED, op.invoked_at, op.completed_at)
        elif op.kind is OpKind.CAS:
            expected, new = _cas_arg(op)
            if new not in observed:
                arg = (expected, UNOBSERVED)
                op = Operation(op.process, op.kind, arg, op.invoked_at, op.completed_at, op.result)
        out.append(op)
    return out


def _cas_arg(op: Operation) -> tuple[Hashable, Hashable]:
    arg = op.arg
    if not (isinstance(arg, tuple) and len(arg) == 2):
        raise MalformedHistoryError(f"cas argument must be (expected, new): {op}")
    return arg[0], arg[1]


@dataclass(frozen=True, slots=True)
class PlainRegister:
    """A register holding one value; cas(expected, new) succeeds iff value == expected."""

    initial: Hashable = None

    def initial_state(self) -> Hashable:
        return self.initial

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        if op.kind is OpKind.READ:
            return op.pending or op.result == state, state
        if op.kind is OpKind.WRITE:
            return True, op.arg
        expected, new = _cas_arg(op)
        applies = state == expected
        if op.pending:
            return True, new if applies else state
        return op.result == applies, new if applies else state

    def canonical(self, ops: Sequence[Operation]) -> list[Operation]:
        observed: set[Hashable] = {self.initial}
        for op in ops:
            if op.kind is OpKind.READ and not op.pending:
                observed.add(op.result)
            elif op.kind is OpKind.CAS:
                observed.add(_cas_arg(op)[0])
        return _replace_unobserved(ops, observed)


class ZnodeState(NamedTuple):
    """What a getData answers: the stat's version and the data. Equal to a plain tuple."""

    version: int
    data: Hashable


@dataclass(frozen=True, slots=True)
class ZnodeRegister:
    """One znode. write(data) = setData(data, -1); cas(v, data) = setData(data, v).

    Every successful set bumps the version by one, as ZooKeeper does; a read's result is
    ``(version, data)``. Starting version 0 is a freshly created znode.
    """

    initial_version: int = 0
    initial_data: Hashable = b""

    def initial_state(self) -> ZnodeState:
        return ZnodeState(self.initial_version, self.initial_data)

    def step(self, state: ZnodeState, op: Operation) -> tuple[bool, ZnodeState]:
        if op.kind is OpKind.READ:
            return op.pending or op.result == state, state
        if op.kind is OpKind.WRITE:
            return True, ZnodeState(state.version + 1, op.arg)
        expected, new = _cas_arg(op)
        applies = expected == -1 or expected == state.version
        after = ZnodeState(state.version + 1, new) if applies else state
        if op.pending:
            return True, after
        return op.result == applies, after

    def canonical(self, ops: Sequence[Operation]) -> list[Operation]:
        # Versions are compared by cas; only data is ever unobserved.
        observed: set[Hashable] = {self.initial_data}
        for op in ops:
            if op.kind is OpKind.READ and not op.pending:
                seen = op.result
                observed.add(seen[1] if isinstance(seen, tuple) and len(seen) == 2 else seen)
        return _replace_unobserved(ops, observed)


class Verdict(enum.Enum):
    OK = "ok"
    """A linearization exists; ``CheckResult.linearization`` is one."""

    NOT_LINEARIZABLE = "not linearizable"
    """No order of the operations respects both real time and the register's spec."""

    UNKNOWN = "unknown"
    """The search gave up after ``max_configurations``; nothing was proven."""


@dataclass(frozen=True, slots=True)
class CheckResult(Generic[S]):
    verdict: Verdict
    explanation: str
    linearization: tuple[Operation, ...] = ()
    """For OK: the completed ops, and the pending ones the search chose to place, in order."""
    failed_op: Operation | None = None
    """For NOT_LINEARIZABLE: the op whose completion the search could not get past."""
    states: tuple[S, ...] = ()
    """The register states the search reached just before ``failed_op`` had to be placed."""
    configurations: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


_MAX_STATES_SHOWN = 8


def check(
    history: Sequence[Operation],
    spec: RegisterSpec[S],
    *,
    max_configurations: int | None = 5_000_000,
) -> CheckResult[S]:
    """Search for a linearization of ``history`` under ``spec`` (Wing & Gong, Lowe's cache).

    Two ops are concurrent unless one completed strictly before the other was invoked (equal
    timestamps count as overlapping, which can only make the checker more permissive).
    """
    ops = _validated(history)
    canonical = spec.canonical(ops)
    result = _search(spec, canonical, ops, max_configurations)
    if result.verdict is Verdict.NOT_LINEARIZABLE and canonical != ops:
        # Name real values in the explanation; a small budget, as this is only cosmetic.
        budget = min(2 * result.configurations + 10_000, 50_000)
        exact = _search(spec, ops, ops, budget)
        if exact.verdict is Verdict.NOT_LINEARIZABLE:
            return exact
    return result


def _search(
    spec: RegisterSpec[S],
    canonical: list[Operation],
    ops: list[Operation],
    max_configurations: int | None,
) -> CheckResult[S]:
    done = [(c, op) for c, op in zip(canonical, ops, strict=True) if op.completed_at is not None]
    pending = [(c, op) for c, op in zip(canonical, ops, strict=True) if op.completed_at is None]
    pending.sort(key=lambda pair: pair[1].invoked_at)
    search = _Search(
        spec,
        [c for c, _ in done],
        [c for c, _ in pending],
        [op for _, op in done],
        [op for _, op in pending],
    )
    return search.run(max_configurations)


def _validated(history: Sequence[Operation]) -> list[Operation]:
    ops: list[Operation] = []
    for op in history:
        if not isinstance(op.kind, OpKind):
            raise MalformedHistoryError(f"unknown op kind: {op!r}")
        if not math.isfinite(op.invoked_at):
            raise MalformedHistoryError(f"invocation time must be finite: {op}")
        if op.completed_at is not None and op.completed_at < op.invoked_at:
            raise MalformedHistoryError(f"completed before it was invoked: {op}")
        if op.kind is OpKind.CAS:
            _cas_arg(op)
            if op.completed_at is not None and not isinstance(op.result, bool):
                raise MalformedHistoryError(f"a completed cas needs a bool result: {op}")
        if op.kind is OpKind.READ and op.pending:
            continue  # no effect and no observation: it constrains nothing
        ops.append(op)
    return ops


@dataclass(slots=True)
class _Search(Generic[S]):
    """Lowe's formulation: a doubly linked list of call/return entries in time order.

    Only completed ops are in the list. Linearizing one lifts its call and return out;
    reaching a return entry means that op had to be placed by now. Before backtracking
    from there, the search tries the pending ops invoked by then (pending ops have no
    return, so nothing forces them; trying them last keeps the first visit of each
    configuration the one with the fewest pending ops placed, which the cache exploits).
    Entry ids are ranks in time order; 0 and ``n+1`` are the head and tail sentinels.
    """

    spec: RegisterSpec[S]
    done: list[Operation]
    pending: list[Operation]
    """Sorted by invocation time."""
    done_as_recorded: list[Operation]
    pending_as_recorded: list[Operation]
    same_effect_before: list[int] = field(default_factory=list)
    """For pending[j]: the latest pending[k], k < j, with the same kind and argument, or -1."""
    op_of: list[int] = field(default_factory=list)
    is_call: list[bool] = field(default_factory=list)
    match: list[int] = field(default_factory=list)
    time_of: list[float] = field(default_factory=list)
    nxt: list[int] = field(default_factory=list)
    prv: list[int] = field(default_factory=list)
    seen: dict[tuple[int, S], list[int]] = field(default_factory=dict)
    configurations: int = 0

    def __post_init__(self) -> None:
        last_with: dict[tuple[OpKind, Hashable], int] = {}
        for j, op in enumerate(self.pending):
            self.same_effect_before.append(last_with.get((op.kind, op.arg), -1))
            last_with[op.kind, op.arg] = j
        events: list[tuple[float, int, int]] = []
        for i, op in enumerate(self.done):
            assert op.completed_at is not None
            events.append((op.invoked_at, 0, i))
            events.append((op.completed_at, 1, i))
        # At equal times calls sort before returns, so touching ops overlap.
        events.sort()
        n = len(events)
        self.op_of = [-1] * (n + 2)
        self.is_call = [False] * (n + 2)
        self.match = [-1] * (n + 2)
        self.time_of = [math.inf] * (n + 2)
        call_entry: dict[int, int] = {}
        for rank, (at, kind, i) in enumerate(events, start=1):
            self.op_of[rank] = i
            self.time_of[rank] = at
            self.is_call[rank] = kind == 0
            if kind == 0:
                call_entry[i] = rank
            else:
                self.match[call_entry[i]] = rank
        self.nxt = [*range(1, n + 2), -1]
        self.prv = [-1, *range(0, n + 1)]

    def _lift(self, call: int) -> None:
        nxt, prv, ret = self.nxt, self.prv, self.match[call]
        nxt[prv[call]] = nxt[call]
        prv[nxt[call]] = prv[call]
        nxt[prv[ret]] = nxt[ret]
        prv[nxt[ret]] = prv[ret]

    def _unlift(self, call: int) -> None:
        nxt, prv, ret = self.nxt, self.prv, self.match[call]
        nxt[prv[ret]] = ret
        prv[nxt[ret]] = ret
        nxt[prv[call]] = call
        prv[nxt[call]] = call

    def _visit(self, placed: int, placed_pending: int, state: S) -> bool:
        """Records a configuration; False if one at least as promising was seen before.

        (placed, P, s) is at least as promising as (placed, P', s) when P <= P': the
        pending ops placed in P' but not in P can still be placed later, or never.
        """
        key = (placed, state)
        prior = self.seen.get(key)
        if prior is None:
            self.seen[key] = [placed_pending]
        else:
            if any(q & ~placed_pending == 0 for q in prior):
                return False
            prior[:] = [q for q in prior if placed_pending & ~q]
            prior.append(placed_pending)
        self.configurations += 1
        return True

    def run(self, max_configurations: int | None) -> CheckResult[S]:
        done, pending, step = self.done, self.pending, self.spec.step
        same_effect_before = self.same_effect_before
        op_of, is_call, nxt = self.op_of, self.is_call, self.nxt
        state = self.spec.initial_state()
        placed = placed_pending = 0  # bit i set = done[i] (pending[i]) linearized
        remaining = len(done)
        # (call entry, -1, state before) or (return entry it was tried at, pending index, ...)
        stack: list[tuple[int, int, S]] = []
        deepest, deepest_states = -1, list[S]()
        entry, scan = nxt[0], -1
        while remaining:
            if max_configurations is not None and self.configurations > max_configurations:
                return CheckResult(
                    Verdict.UNKNOWN,
                    f"gave up after {max_configurations} configurations",
                    configurations=self.configurations,
                )
            if is_call[entry]:
                i = op_of[entry]
                legal, after = step(state, done[i])
                if legal and self._visit(placed | (1 << i), placed_pending, after):
                    stack.append((entry, -1, state))
                    placed, state, remaining = placed | (1 << i), after, remaining - 1
                    self._lift(entry)
                    entry = nxt[0]
                else:
                    entry = nxt[entry]
                continue
            if scan < 0:  # first time stuck at this return entry in this configuration
                if entry > deepest:
                    deepest, deepest_states = entry, [state]
                elif entry == deepest and state not in deepest_states:
                    deepest_states.append(state)
                scan = 0
            limit, moved = self.time_of[entry], False
            while scan < len(pending) and pending[scan].invoked_at <= limit:
                j, scan = scan, scan + 1
                if placed_pending >> j & 1:
                    continue
                # Ops with the same effect are interchangeable: place them in invocation
                # order (any linearization can be rewritten to do so).
                twin = same_effect_before[j]
                if twin >= 0 and not placed_pending >> twin & 1:
                    continue
                _, after = step(state, pending[j])
                if after != state and self._visit(placed, placed_pending | (1 << j), after):
                    stack.append((entry, j, state))
                    placed_pending, state = placed_pending | (1 << j), after
                    entry, scan, moved = nxt[0], -1, True
                    break
            if moved:
                continue
            if not stack:
                return self._failure(deepest, deepest_states)
            entry, j, state = stack.pop()
            if j < 0:
                i = op_of[entry]
                placed, remaining = placed & ~(1 << i), remaining + 1
                self._unlift(entry)
                entry, scan = nxt[entry], -1
            else:
                placed_pending, scan = placed_pending & ~(1 << j), j + 1
        done_rec, pending_rec = self.done_as_recorded, self.pending_as_recorded
        order = tuple(done_rec[op_of[e]] if j < 0 else pending_rec[j] for e, j, _ in stack)
        return CheckResult(
            Verdict.OK,
            f"linearizable ({len(order)} ops placed, {self.configurations} configurations)",
            linearization=order,
            configurations=self.configurations,
        )

    def _failure(self, deepest: int, states: list[S]) -> CheckResult[S]:
        op = self.done_as_recorded[self.op_of[deepest]]
        shown = ", ".join(repr(s) for s in states[:_MAX_STATES_SHOWN])
        if len(states) > _MAX_STATES_SHOWN:
            shown += f", ... ({len(states)} in all)"
        if "<unobserved>" in shown:
            shown += " (<unobserved>: a written value that no read or cas compares to)"
        explanation = (
            f"not linearizable: {op} could not be placed before it completed; "
            f"the register could have held only: {shown}"
        )
        return CheckResult(
            Verdict.NOT_LINEARIZABLE,
            explanation,
            failed_op=op,
            states=tuple(states),
            configurations=self.configurations,
        )


@dataclass(slots=True)
class HistoryRecorder:
    """Records a history as clients run, Jepsen style: invoke, then ok / fail / info.

    ``clock`` is e.g. ``trio.current_time`` (one clock for all clients: real-time order is
    only meaningful on a single timeline). ``fail`` is for calls known not to have taken
    effect (the op is dropped); ``info`` for unknown outcomes. Calls never finished by the
    time ``history()`` is taken count as unknown.
    """

    clock: Callable[[], float]
    _open: dict[int, tuple[int, OpKind, Hashable, float]] = field(default_factory=dict, init=False)
    _done: list[tuple[int, Operation]] = field(default_factory=list, init=False)
    _next: int = field(default=0, init=False)

    def invoke(self, process: int, kind: OpKind, arg: Hashable = None) -> int:
        handle = self._next
        self._next += 1
        self._open[handle] = (process, kind, arg, self.clock())
        return handle

    def ok(self, handle: int, result: Hashable = None) -> None:
        process, kind, arg, invoked_at = self._open.pop(handle)
        op = Operation(process, kind, arg, invoked_at, self.clock(), result)
        self._done.append((handle, op))

    def fail(self, handle: int) -> None:
        del self._open[handle]

    def info(self, handle: int) -> None:
        process, kind, arg, invoked_at = self._open.pop(handle)
        self._done.append((handle, Operation(process, kind, arg, invoked_at, None)))

    def history(self) -> list[Operation]:
        unfinished = [
            (h, Operation(p, kind, arg, at, None)) for h, (p, kind, arg, at) in self._open.items()
        ]
        return [op for _, op in sorted([*self._done, *unfinished], key=lambda e: e[0])]
