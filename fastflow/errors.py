"""Typed errors, each with the exit code the command line maps it to."""


class FastflowError(Exception):
    """Base class: a problem the user can act on; the CLI prints it as one line."""

    exit_code = 2


class UsageError(FastflowError):
    exit_code = 2


class InputError(FastflowError):
    """The input cannot be read at all (missing, not a capture, unsupported link type)."""

    exit_code = 2


class FilterError(FastflowError):
    """The BPF filter expression does not compile (libpcap's message)."""

    exit_code = 2


class OutputError(FastflowError):
    """The output cannot be written (exists, folder missing or not writable, disk full)."""

    exit_code = 2
