"""Every exception servelab raises, in one tree.

    ServelabError
    ├── ConfigError               a setting or spec is invalid (says which key and what is allowed)
    ├── InvalidNameError          a model/function name fails validation (path traversal, charset)
    ├── ModelError
    │   ├── UnknownModelError     not in the zoo
    │   └── InvalidModelError     a file that is not a loadable ONNX model
    ├── StoreError
    │   ├── RefNotFoundError      no such name or ref in the store
    │   └── IntegrityError        a blob whose sha256 does not match its ref (never served)
    ├── RuntimeNotAvailableError  the runtime's extra is not installed (says which to install)
    ├── InputValidationError      tensors with wrong names / shapes / dtypes
    ├── LimitsError               cgroup / rlimit set-up failed
    ├── StartupError              the platform cannot start (port, home, store): says what to fix
    │   └── HomeInUseError        another live platform holds this home's lock
    ├── WorkloadError             an arrival-process spec or trace that cannot be used
    ├── TrainingError
    │   └── WorkerFailedError     a distributed worker/server process died or raised (job stopped)
    └── PlatformError             carries function / instance / request id when known
        ├── FunctionNotFoundError
        ├── FunctionExistsError
        ├── ThrottledError        above the function's concurrency (HTTP 429)
        ├── FunctionTimeoutError  the invocation ran past the function's timeout
        ├── InstanceCrashedError  the instance process died (platform blames nobody: reported)
        ├── OutOfMemoryError      the instance exceeded its memory size
        └── FunctionError         the user's handler raised (blame: function)

Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations


class ServelabError(Exception):
    """Base class: catch this to catch everything servelab raises on purpose."""


class ConfigError(ServelabError, ValueError):
    pass


class InvalidNameError(ServelabError, ValueError):
    pass


class ModelError(ServelabError):
    pass


class UnknownModelError(ModelError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class InvalidModelError(ModelError, ValueError):
    pass


class StoreError(ServelabError):
    pass


class RefNotFoundError(StoreError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IntegrityError(StoreError):
    pass


class RuntimeNotAvailableError(ServelabError, ImportError):
    pass


class InputValidationError(ServelabError, ValueError):
    pass


class LimitsError(ServelabError):
    pass


class StartupError(ServelabError):
    pass


class HomeInUseError(StartupError):
    pass


class WorkloadError(ServelabError, ValueError):
    pass


class TrainingError(ServelabError):
    pass


class WorkerFailedError(TrainingError, RuntimeError):
    """A worker or server process died or raised; the job was stopped (never left hanging).

    ``role`` is "worker" or "server", ``rank`` the global rank, ``exitcode`` the process's exit
    status (negative: killed by that signal), ``detail`` the traceback text when it raised.
    """

    def __init__(
        self,
        message: str,
        *,
        role: str,
        rank: int,
        pid: int | None,
        exitcode: int | None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.role = role
        self.rank = rank
        self.pid = pid
        self.exitcode = exitcode
        self.detail = detail


class PlatformError(ServelabError):
    """An error about one function, instance or request; the context travels with it."""

    def __init__(
        self,
        message: str,
        *,
        function: str | None = None,
        instance_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.function = function
        self.instance_id = instance_id
        self.request_id = request_id


class FunctionNotFoundError(PlatformError):
    pass


class FunctionExistsError(PlatformError):
    pass


class ThrottledError(PlatformError):
    pass


class FunctionTimeoutError(PlatformError):
    pass


class InstanceCrashedError(PlatformError):
    pass


class OutOfMemoryError(PlatformError):
    pass


class FunctionError(PlatformError):
    pass
