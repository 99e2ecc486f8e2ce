"""fastflow: packet captures to analysed TCP connections (handshake, teardown, Zeek conn_state) in Parquet."""
__version__ = "0.1.0"

from .errors import FastflowError, FilterError, InputError, OutputError, UsageError  # noqa: E402
from .pipeline import Result, process  # noqa: E402

__all__ = ["__version__", "process", "Result", "FastflowError", "InputError", "FilterError", "OutputError",
           "UsageError"]
