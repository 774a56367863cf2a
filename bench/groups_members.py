"""The processes of `make bench-groups` (bench.groups_member) seen from the orchestrator.

``MemberProc`` starts one ``bench.groups_member`` process and reads its JSON-lines log as
it grows (the listener's view of what it owns, when each partition was assigned, when
each partition last gave records). ``FlowGroup`` holds the live members of one group
and tells when the group is *settled*: every partition owned by exactly one member,
sizes within one of each other, every partition read by its owner since it got it, and
no listener callback for a while.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CALLBACKS = ("assigned", "revoked", "lost")


class MemberProc:
    def __init__(self, index: int, argv: list[str], out: Path, *, stdin: bool = False) -> None:
        self.index = index
        self.out = out
        self.entries: list[dict[str, Any]] = []
        self.owned: set[int] = set()
        self.assigned_at: dict[int, float] = {}
        self.last_records_at: dict[int, float] = {}
        self.last_callback_at = 0.0
        self._pos = 0
        self._tail = b""
        out.touch()
        self._err = open(out.with_suffix(".stderr"), "wb")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stderr=self._err,
        )

    @classmethod
    def start(
        cls, index: int, mode: str, out: Path, options: dict[str, str], *, stdin: bool = False
    ) -> MemberProc:
        argv = [sys.executable, "-m", "bench.groups_member", mode, "--out", str(out)]
        for name, value in options.items():
            argv += [f"--{name}", value]
        return cls(index, argv, out, stdin=stdin)

    def refresh(self) -> None:
        """Read what the member logged since the last call (a line being written stays
        in ``_tail`` until it is complete)."""
        with open(self.out, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            entry = json.loads(line)
            self.entries.append(entry)
            kind = entry["e"]
            if kind == "records":
                for p in entry["p"]:
                    self.last_records_at[int(p)] = entry["at"]
            elif kind in CALLBACKS:
                self.last_callback_at = entry["at"]
                parts = set(entry["partitions"])
                if kind == "assigned":
                    self.owned |= parts
                    for p in parts:
                        self.assigned_at[p] = entry["at"]
                else:
                    self.owned -= parts

    def first(self, kind: str, after: float = float("-inf")) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["e"] == kind and e["at"] >= after), None)

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            entry = self.first(kind)
            if entry is not None:
                return entry
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"member {self.index} never logged {kind!r}")
            time.sleep(0.02)  # polling another process's log, with a deadline

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None and self.first("closed") is None:
            err = self.out.with_suffix(".stderr").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"member {self.index} exited ({code}):\n{err}")

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        finally:
            self._err.close()
            for pipe in (self.popen.stdin, self.popen.stdout):
                if pipe is not None:
                    pipe.close()
        self.refresh()


class FlowGroup:
    """The live members of one group in ``flow`` mode, and every member it ever had."""

    def __init__(self, workdir: Path, partitions: int, options: dict[str, str]) -> None:
        self.workdir = workdir
        self.partitions = partitions
        self.options = options
        self.active: list[MemberProc] = []
        self.all: list[MemberProc] = []

    def spawn(self) -> MemberProc:
        index = len(self.all)
        out = self.workdir / f"{self.options['group']}-member-{index}.jsonl"
        member = MemberProc.start(index, "flow", out, self.options)
        self.active.append(member)
        self.all.append(member)
        return member

    def retire(self, member: MemberProc) -> None:
        """SIGTERM: the member leaves its poll loop and closes (LeaveGroup)."""
        self.active.remove(member)
        member.terminate()

    def owners(self) -> dict[int, int]:
        return {p: m.index for m in self.active for p in m.owned}

    def settled(self) -> bool:
        owners: dict[int, MemberProc] = {}
        for m in self.active:
            for p in m.owned:
                if p in owners:
                    return False  # two owners: a revocation not yet logged
                owners[p] = m
        if len(owners) != self.partitions:
            return False
        sizes = [len(m.owned) for m in self.active]
        if max(sizes) - min(sizes) > 1:
            return False
        return all(m.last_records_at.get(p, 0.0) > m.assigned_at[p] for p, m in owners.items())

    def wait_settled(self, quiet_s: float, timeout: float) -> float:
        """Wait until settled with no listener callback for ``quiet_s``; returns when."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.all:
                m.refresh()
                if m in self.active:
                    m.check_alive()
            now = time.monotonic()
            last_callback = max(m.last_callback_at for m in self.all)
            if self.settled() and now - last_callback >= quiet_s:
                return now
            if now > deadline:
                sizes = {m.index: len(m.owned) for m in self.active}
                raise TimeoutError(f"group never settled; partitions per member: {sizes}")
            time.sleep(0.05)  # polling the members' logs, with a deadline

    def stop(self) -> None:
        for m in self.active:
            m.terminate()
        for m in self.all:
            m.wait()
        self.active.clear()
