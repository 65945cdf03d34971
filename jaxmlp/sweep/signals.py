"""Ctrl-C and SIGTERM, honoured from the first instant of a sweep to the last.

The handlers only remember the signal; the sweep checks at every step (after its imports,
before and after compiling, every epoch) and raises KeyboardInterrupt there. Raising from the
handler itself could land in the middle of importing a C extension or inside a callback
(Python swallows exceptions in gc callbacks, which JAX registers) and crash the process. A
second signal raises at once. `python -m jaxmlp.sweep` installs the handlers before JAX and
MLflow are imported; the exit code is 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
"""
from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The signals a sweep received, and the handlers that record them."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: list[dict] = []

    def handler(self, signum, frame) -> None:
        self.received.append(signum)
        if len(self.received) > 1:  # asked twice: now
            raise KeyboardInterrupt(f"signal {signum}")

    def install(self) -> None:
        """Record SIGINT and SIGTERM from now on (nested calls pair with `restore`). A second
        signal's interrupt that Python swallows (in a gc callback) is not printed: `check`
        raises it again."""
        if threading.current_thread() is threading.main_thread():
            self._previous.append(({s: signal.signal(s, self.handler) for s in SIGNALS}, sys.unraisablehook))
            sys.unraisablehook = self._unraisable

    def restore(self) -> None:
        if self._previous:
            handlers, sys.unraisablehook = self._previous.pop()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def _unraisable(self, unraisable) -> None:
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and self.received):
            sys.__unraisablehook__(unraisable)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal came."""
        if self.received:
            raise KeyboardInterrupt(f"signal {self.received[0]}")

    @property
    def exit_code(self) -> int:
        return 128 + (self.received[0] if self.received else signal.SIGINT)
