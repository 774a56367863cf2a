"""``minibroker chaos``: a workload, seeded faults and a Jepsen-style check of a cluster.

``run(ChaosOptions(target="process", cluster_dir=..., duration_s=60, seed=1))`` returns a
``ChaosResult`` (verdict, report, faults, history); the CLI (``chaos.cli``) wraps it. The
checker (``chaos.checker``) is pure and usable on any recorded ``chaos.history``.
"""

from chaos.options import ChaosOptions
from chaos.result import ChaosResult, load_history
from chaos.runner import run
from chaos.schedule import FaultKind

__all__ = ["ChaosOptions", "ChaosResult", "FaultKind", "load_history", "run"]
