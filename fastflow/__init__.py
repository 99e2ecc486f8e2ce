"""fastflow: packet captures to analysed TCP connections (handshake, teardown, Zeek conn_state) in Parquet."""
__version__ = "0.1.0"

from .errors import FastflowError, FilterError, InputError, OutputError, UsageError  # noqa: E402

__all__ = ["__version__", "process", "Result", "FastflowError", "InputError", "FilterError", "OutputError",
           "UsageError"]


def __getattr__(name: str):
    # process and Result load numpy and pyarrow on first use: the command line sets up the process first
    # (cli.tune_process) and `fastflow --help` starts without them
    if name in ("process", "Result"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'fastflow' has no attribute {name!r}")
