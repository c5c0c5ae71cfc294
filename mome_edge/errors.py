"""One exception family for every user-facing failure.

Every message names the problem *and* the fix, so that the CLI can print it as one line and
exit with code 2 without a traceback.
"""


class MomeError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, bad file)."""


class ConfigError(MomeError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(MomeError, ValueError):
    """A data file or data set is missing, malformed or inconsistent with its spec."""


class ArtifactError(MomeError, ValueError):
    """A compiled artifact or checkpoint is unreadable, corrupt or inconsistent."""


class ParityError(MomeError, RuntimeError):
    """Two stages that must agree (torch, artifact, ONNX, runtime) do not, within tolerance."""
