"""One chaos run, start to verdict: ``run(ChaosOptions(...)) -> ChaosResult``.

1. Find the target (cluster.json or the compose project) and check it can do the faults.
2. Create a fresh topic (RF 3, min ISR 2); start the producers and the group members.
3. Run the seeded schedule: each fault injected, held, healed (always, in a ``finally``),
   then the cluster given time to recover (every ISR full again) before the next.
4. A quiet phase without faults until the duration is over; stop the producers (every
   outstanding send completes), read every partition from offset 0, let the group catch
   up with its commits, stop it.
5. Check the history; write ``history.json`` and ``report.html``; print the summary.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from chaos.analysis import InjectedFault
from chaos.checker import check
from chaos.cluster_view import ClusterView
from chaos.compose_target import ComposeTarget
from chaos.errors import ChaosError, FaultInjectionError
from chaos.history import QueueHistory
from chaos.local_cluster import started_cluster
from chaos.options import ChaosOptions
from chaos.process_target import ProcessTarget
from chaos.report_html import write_html
from chaos.report_terminal import print_summary
from chaos.result import ChaosResult
from chaos.schedule import PlannedFault, plan
from chaos.target import Target, check_supported
from chaos.workload import GroupMember, ProducerWorker

__all__ = ["make_target", "run"]

FINAL_READER = 1_000  # the final read's process id in the history
MEMBER_BASE = 100  # group members are processes 100, 101, ...
DRAIN_TIMEOUT_S = 60.0


def make_target(options: ChaosOptions) -> ProcessTarget | ComposeTarget:
    if options.target == "process":
        return ProcessTarget(options.cluster_dir)
    return ComposeTarget(options.compose_file, options.compose_project)


class _Run:
    def __init__(self, opts: ChaosOptions, target: Target, console: Console) -> None:
        assert opts.seed is not None and opts.topic is not None and opts.out_dir is not None
        self.opts = opts
        self.target = target
        self.console = console
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.history = QueueHistory(self.clock)
        self.stop = threading.Event()
        self.bootstrap = opts.bootstrap_servers or target.bootstrap()
        self.view = ClusterView(self.bootstrap, opts.topic, opts.partitions)
        self.planned: tuple[PlannedFault, ...] = plan(
            opts.seed, opts.duration_s - opts.quiet, opts.faults, target.brokers()
        )
        self.faults: list[InjectedFault] = []
        self.notes: list[str] = []
        self.producers = [
            ProducerWorker(
                self.history, self.bootstrap, opts.topic, i, opts.run_id, opts.rate / opts.producers
            )
            for i in range(opts.producers)
        ]
        self.members = [
            GroupMember(self.history, self.bootstrap, opts.topic, opts.group, MEMBER_BASE + i)
            for i in range(opts.consumers)
        ]

    def clock(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{self.clock():7.1f}s[/dim] {text}", highlight=False)

    def sleep_until(self, at: float) -> None:
        """The schedule's own timing (a gap or a hold), checking the workers meanwhile."""
        while (left := at - self.clock()) > 0:
            time.sleep(min(left, 0.5))
            self.check_workers()

    def check_workers(self) -> None:
        for producer in self.producers:
            producer.check_alive()
        for member in self.members:
            member.check_alive()

    def faults_phase(self) -> None:
        fault_end = self.opts.duration_s - self.opts.quiet
        for planned in self.planned:
            start = max(planned.start_s, self.clock())
            if start + planned.hold_s > fault_end:
                self.notes.append(
                    f"{len(self.planned) - planned.index} planned faults did not fit in the "
                    "fault phase after slow recoveries"
                )
                return
            self.sleep_until(start)
            if not self.one_fault(planned):
                self.notes.append("a heal failed: no more faults injected")
                return

    def one_fault(self, planned: PlannedFault) -> bool:
        """Inject, hold, heal, wait for recovery; False if the heal failed."""
        try:
            leaders = self.view.leaders()
        except ChaosError:
            leaders = {}
        fault = InjectedFault(planned.index, str(planned.kind), planned.broker, "", self.clock())
        fault.leaders = leaders
        self.faults.append(fault)
        try:
            fault.target = self.target.resolve(planned.broker)
            fault.started_at = self.clock()  # after a leader lookup, as the action starts
            heal = self.target.inject(planned.kind, fault.target)
        except FaultInjectionError as exc:
            fault.error = str(exc)
            self.say(f"[yellow]{planned.kind} failed to inject: {exc}[/yellow]")
            return True
        led = f" (led {', '.join(map(str, fault.led))})" if fault.led else ""
        self.say(f"[bold]{planned.kind}[/bold] {fault.target}{led} for {planned.hold_s:.1f}s")
        try:
            self.sleep_until(fault.started_at + planned.hold_s)
        finally:
            try:
                heal()
            except FaultInjectionError as exc:
                fault.error = f"heal failed: {exc}"
                self.say(f"[red]heal of {fault.target} failed: {exc}[/red]")
                return False
            fault.healed_at = self.clock()
        took = self.view.wait_recovered(self.opts.recovery_timeout_s)
        if took is None:
            self.notes.append(
                f"fault #{fault.index} ({fault.kind} {fault.target}): ISRs not full within "
                f"{self.opts.recovery_timeout_s:.0f} s of the heal"
            )
            self.say(f"[yellow]not recovered in {self.opts.recovery_timeout_s:.0f}s[/yellow]")
        else:
            fault.recovered_at = self.clock()
            self.say(f"healed {fault.target}; every ISR full {took:.1f}s later")
        return True

    def drain_group(self, end: dict[int, int]) -> None:
        """Let the group commit up to the end of every partition (bounded), so the
        group-skip check covers the whole log."""
        if not self.members:
            return
        deadline = time.monotonic() + DRAIN_TIMEOUT_S

        def lag() -> int:
            committed = {
                p: max((m.committed.get(p, 0) for m in self.members), default=0) for p in end
            }
            return sum(max(end[p] - committed[p], 0) for p in end)

        while (left := lag()) and time.monotonic() < deadline:
            time.sleep(0.2)  # the members' own progress, polled
            self.check_workers()
        if left:
            self.notes.append(f"the group had {left} records left to commit after the drain")

    def workers_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for p in self.producers:
            out[f"producer-{p.process}"] = {
                "acked": p.acked, "failed": p.failed, "unknown": p.unknown, "errors": p.errors,
            }  # fmt: skip
        for m in self.members:
            out[f"member-{m.process}"] = {
                "polled": m.polled, "commits": m.commits, "commit_failures": m.commit_failures,
                "poll_errors": m.poll_errors, "rebalances": m.rebalances, "errors": m.errors,
            }  # fmt: skip
        return out

    def execute(self) -> ChaosResult:
        opts = self.opts
        self.say(f"target: {self.target.describe()}; bootstrap {self.bootstrap}")
        self.say(f"seed {opts.seed}: {len(self.planned)} faults planned")
        for p in self.planned:
            self.console.print(f"          {p.describe()}", highlight=False)
        self.view.create_topic()
        self.say(f"topic {opts.topic}: {opts.partitions} partitions, RF 3, min ISR 2")
        error: str | None = None
        report = None
        try:
            for producer in self.producers:
                producer.start()
            for member in self.members:
                member.start()
            try:
                self.faults_phase()
                self.say(f"quiet phase until {opts.duration_s:.0f}s")
                self.sleep_until(opts.duration_s)
            finally:
                for producer in self.producers:
                    producer.stop()
            self.say("producers stopped; final read")
            if self.view.wait_recovered(opts.recovery_timeout_s) is None:
                self.notes.append("ISRs not full before the final read")
            end = self.view.final_read(self.history, FINAL_READER)
            self.drain_group(end)
            for member in self.members:
                member.stop()
            report = check(self.history.history())
        except ChaosError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except KeyboardInterrupt:  # the fault in progress was healed on the way out
            error = "interrupted (Ctrl-C) before the check"
        finally:
            for member in self.members:
                member.halt()
            self.view.close()
            self.target.close()
        return ChaosResult(
            options=opts.to_json(),
            target=self.target.describe(),
            started_wall=self.wall0,
            ended_at=self.clock(),
            planned=self.planned,
            faults=self.faults,
            events=self.history.history(),
            report=report,
            workers=self.workers_json(),
            notes=self.notes,
            error=error,
        )


def run(
    options: ChaosOptions,
    *,
    console: Console | None = None,
    target: Target | None = None,
    on_result: Callable[[ChaosResult], None] | None = None,
) -> ChaosResult:
    """Run, check, write ``history.json`` and ``report.html`` into ``out_dir`` and print
    the summary. ``target`` replaces the one the options name (tests)."""
    opts = options.validated()
    console = console or Console()
    assert opts.out_dir is not None
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if opts.start_cluster and target is None:
            console.print(f"starting a process cluster in {opts.cluster_dir}", highlight=False)
            stack.enter_context(started_cluster(Path(opts.cluster_dir), out / "cluster-up.log"))
        tgt = target or make_target(opts)
        check_supported(tgt, opts.faults)
        result = _Run(opts, tgt, console).execute()
    result.write_json(out / "history.json")
    html = write_html(result, out / "report.html")
    print_summary(result, console, out, html)
    if on_result is not None:
        on_result(result)
    return result
