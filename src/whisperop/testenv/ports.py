"""Free TCP ports on loopback.

Why: tests may run beside other environments (other checkouts, CI jobs), so
no component gets a fixed port; the kernel hands out an unused one and we
remember what we handed out so two components never get the same one.
"""

from __future__ import annotations

import socket

_given: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and not yet given out."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port
    raise RuntimeError("no free loopback port found")
