"""Errors of ``minibroker chaos``. Hierarchy::

    MinibrokerError (proto.errors)
    └── ChaosError
        ├── ChaosConfigError       a bad option, or a fault the target cannot inject
        ├── FaultInjectionError    a signal or docker command that injects or heals failed
        └── ChaosRunError          the run could not finish (no topic, no final read)

The CLI prints any of them as one line and exits 2: the run has no verdict.
"""

from __future__ import annotations

from proto.errors import MinibrokerError

__all__ = ["ChaosConfigError", "ChaosError", "ChaosRunError", "FaultInjectionError"]


class ChaosError(MinibrokerError):
    """Root of the chaos tool's own errors."""


class ChaosConfigError(ChaosError):
    """An option is wrong, or asks the target for a fault it cannot do."""


class FaultInjectionError(ChaosError):
    """A command that injects or heals a fault failed (its output is in the message)."""


class ChaosRunError(ChaosError):
    """The run could not reach a verdict: setup failed, or the final read never finished."""
