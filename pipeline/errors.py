"""User-facing errors: each prints as one line and exits non-zero (never a traceback)."""
from __future__ import annotations


class KdpipeError(Exception):
    """Base class for errors caused by input the user can fix (config, data, workspace)."""

    exit_code = 2


class ConfigError(KdpipeError):
    """A workflow file, `--set` override or stage config is invalid."""


class PlanError(KdpipeError):
    """The stage graph cannot be built: cycle, missing producer, port type mismatch."""


class WorkspaceError(KdpipeError):
    """The workspace path cannot be used: missing (for commands that only read one), a file, or
    under a regular file."""


class WorkspaceBusyError(KdpipeError):
    """Another `kdpipe run` holds the workspace lock."""

    exit_code = 3


class StageError(KdpipeError):
    """A stage failed on its input; the message names the stage and the cause."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with a message saying where a re-run resumes. Still a
    KeyboardInterrupt, so `except Exception` in API callers never swallows it."""

    exit_code = 130
