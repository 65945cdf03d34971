"""The background writer: one thread that runs tracking calls in submission order, so
logging overlaps training, and gathers their errors instead of stopping at the first."""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable


class TrackingError(RuntimeError):
    """One or more background tracking jobs failed; `errors` holds every exception."""

    def __init__(self, errors: list[BaseException]):
        lines = "\n".join(f"  {type(e).__name__}: {e}" for e in errors)
        super().__init__(f"{len(errors)} tracking job(s) failed:\n{lines}")
        self.errors = errors


class AsyncWriter:
    """One background thread that runs submitted callables in submission order.

    A failing job does not stop later ones; its exception is kept (and stays on its
    future) until `flush` or `close` raises it as a `TrackingError`.
    """

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxmlp-tracking")
        self._futures: list[concurrent.futures.Future] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(self._keep_error)
        with self._lock:
            self._futures.append(future)
        return future

    def _keep_error(self, future: concurrent.futures.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            with self._lock:
                self._errors.append(future.exception())

    def flush(self, raise_errors: bool = True) -> list[BaseException]:
        """Wait for all submitted jobs; raise (or return) the errors gathered since the last flush."""
        with self._lock:
            futures, self._futures = self._futures, []
        concurrent.futures.wait(futures)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors and raise_errors:
            raise TrackingError(errors) from errors[0]
        return errors

    def close(self, raise_errors: bool = True) -> list[BaseException]:
        """Finish all submitted jobs, stop the thread, then report errors like `flush`."""
        try:
            return self.flush(raise_errors)
        finally:
            self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop taking jobs and drop those not started, without waiting for the one running."""
        self._executor.shutdown(wait=False, cancel_futures=True)
