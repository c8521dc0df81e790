"""A sandbox for running model-written Python (the `solve` kind's code steps).

    result = await run_python("print(2 ** 100)", SandboxLimits(wall_seconds=10), config=SandboxConfig())
    status = await check_available(SandboxConfig())  # for /readyz

This package imports nothing of the service (agents, api, db, workers): it takes its
configuration as arguments (Settings.sandbox_config() and .sandbox_limits() build them).
The sandbox's Python is built at setup time by `python -m sandbox.build`.
"""
from sandbox.runner import (
    RunResult,
    SandboxConfig,
    SandboxLimits,
    SandboxStatus,
    SandboxUnavailable,
    check_available,
    run_python,
)

__all__ = ["RunResult", "SandboxConfig", "SandboxLimits", "SandboxStatus", "SandboxUnavailable", "check_available",
           "run_python"]
