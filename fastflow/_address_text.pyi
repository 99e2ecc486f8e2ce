"""ext/_address_text.pyx: addresses as text (dotted IPv4, RFC 5952 IPv6), in C."""
import numpy as np

def address_text(raw: np.ndarray, as_ipv4: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
