"""Run generated code and its tests in isolation: a pool of warm check servers (see ``isolation``).

with Sandbox(SandboxConfig(require="bwrap")) as sandbox:
    [record] = sandbox.run([{"code": "def f(x): return x", "test": "assert f(1) == 1"}])
"""

from amr.sandbox.isolation import LEVELS, SandboxError
from amr.sandbox.pool import RECORD_FIELDS, Check, Sandbox, SandboxWarning

__all__ = ["LEVELS", "RECORD_FIELDS", "Check", "Sandbox", "SandboxError", "SandboxWarning"]
