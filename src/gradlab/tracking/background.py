"""A background thread that logs child runs while the grid trains.

Finished runs wait in a bounded queue (a full queue holds the grid back); the thread logs them
one at a time. A child whose logging fails is left to the next start; a tracking server that
does not answer is given up at its first failure, and the rest of the queue with it.
"""

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from gradlab.tracking.maintenance import server_gone, server_unreachable, stop_waiting_for_server

log = logging.getLogger("gradlab.tracking")  # the package's one logger: its lines read as before

# what to log: the stored result's run id (None: nothing to record), its label, the logging
Work = tuple[str | None, str, Callable[[], str | None]]


class LoggingThread:
    """Runs each submitted logging off the training path, in order, and keeps the child ids."""

    def __init__(self, tracking_uri: str, queue_size: int = 16) -> None:
        self.tracking_uri = tracking_uri
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._logged: dict[str, str] = {}  # run id → child run id, written by the thread only

    def submit(self, run_id: str | None, label: str, work: Callable[[], str | None]) -> None:
        """Queue ``work`` (it returns the child run id); ``run_id`` names what to record."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mlflow-logging", daemon=True)
            self._thread.start()
        self._queue.put((run_id, label, work))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            run_id, label, work = item
            try:
                if not server_gone():  # else left, like the rest, to the next start
                    child = work()
                    if run_id is not None and child is not None:
                        self._logged[run_id] = child
            except Exception as error:  # the grid goes on; the next start logs this run again
                if (cause := server_unreachable(error)) is None:
                    log.exception("MLflow logging of %s failed; the next start retries it", label)
                else:
                    stop_waiting_for_server()
                    log.warning(
                        "MLflow at %s does not answer (%s); the runs not logged yet are logged "
                        "by the next start",
                        self.tracking_uri,
                        type(cause).__name__,
                    )
            finally:
                self._queue.task_done()

    def close(self, drain: bool = True, timeout: float | None = None) -> dict[str, str]:
        """Stop the thread once every queued run is logged (``drain``), or once the run it is
        logging is (Ctrl-C: what is left is logged at the next start).

        Returns:
            ``{run id: child run id}`` of the stored results logged whole since the last close.
        """
        if self._thread is None:
            return {}
        if not drain:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
                    self._queue.task_done()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None
        if server_gone():  # again: a Dask executor restores the environment it started with
            stop_waiting_for_server()
        logged, self._logged = self._logged, {}
        return logged
