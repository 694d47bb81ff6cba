"""The execution seam: run a picklable function over many argument tuples, results as they finish.

Three executors: ``SequentialExecutor`` (in this process), ``ProcessPoolExecutor`` (local worker
processes) and ``DaskExecutor`` (a Dask cluster, or a ``LocalCluster`` it starts). Workers use
one torch thread each: for these model sizes one thread per process is 2–3× faster than two
threads in one (measured on a 2-core machine), and the sequential executor uses one thread too,
so all three give bit-identical numbers on CPU. A task that raises comes back as a ``TaskError``
holding its traceback; the other tasks go on. Local workers exit within a second of their
parent's death, however it died.
"""

import atexit
import concurrent.futures as cf
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import Any, Protocol, TypeVar

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)

R = TypeVar("R")


@dataclass(frozen=True)
class TaskError:
    """What a task that raised returns instead of its result: the formatted traceback."""

    error: str


class Executor(Protocol):
    """Runs ``fn(*args)`` for each tuple of ``tasks``; yields ``(index, result)`` as each ends,
    with a ``TaskError`` as the result of a task that raised."""

    def map(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R | TaskError]]: ...


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SequentialExecutor:
    """Runs every task in this process, one after the other."""

    def map(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R | TaskError]]:
        with torch_threads(1):
            for index, args in enumerate(tasks):
                try:
                    result: R | TaskError = fn(*args)
                except Exception:
                    result = TaskError(traceback.format_exc())
                yield index, result


def _exit_with(parent: int) -> None:
    # a parent killed with SIGKILL cannot stop its workers: they notice they were orphaned
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _end_without_teardown() -> None:
    # a spawned worker ends with sys.exit: tearing its modules down (torch, pandas …) takes
    # ~1 s, which pool.shutdown(wait=True) waits for. By now its results have been sent and the
    # exit handlers registered after this one have run; of those registered before it, logging's
    # is the one with work to do. The exit status is 0 even when the worker loop itself raised
    # (Ctrl-C): the pool does not read it, and such a worker's traceback is already printed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _init_worker(parent: int) -> None:
    atexit.register(_end_without_teardown)
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread inside the block, so that the processes it starts keep it
    blocked for life (a spawned child inherits the signal mask). Ctrl-C signals the whole process
    group: a worker interrupted while it starts or unpickles its task prints a traceback; the
    parent stops the workers itself. Blocked, not ignored: a Ctrl-C pressed meanwhile still
    interrupts this process, at once if another of its threads takes it, else when the block
    ends (ignored, it was lost, and the grid trained on)."""
    # multiprocessing's resource tracker unblocks SIGINT when it starts: have it started first
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class ProcessPoolExecutor:
    """Runs tasks in ``workers`` spawned processes (spawn: safe with torch, CUDA and threads)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R | TaskError]]:
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
        )
        try:
            with _sigint_blocked():  # the workers start (at the first submit) deaf to Ctrl-C
                futures = {
                    pool.submit(_by_value, fn, *args): index for index, args in enumerate(tasks)
                }
            for future in cf.as_completed(futures):
                error = future.exception()
                if error is None:
                    yield futures[future], pickle.loads(future.result())
                else:
                    yield futures[future], _task_error(error)
        except BaseException:
            # Ctrl-C, a generator closed early, or an error: drop queued tasks, stop workers now
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                process.terminate()
            raise
        pool.shutdown(wait=True)


def _by_value(fn: Callable[..., Any], *args: Any) -> bytes:
    """``fn(*args)`` pickled by value. The pool's own pickler (torch's reductions for
    multiprocessing) would hand each tensor back as shared memory with an open file descriptor
    for as long as the tensor lives: the results a grid keeps while MLflow logging catches up
    then ran it out of descriptors ("received 0 items of ancdata"), broke the pool and lost the
    runs still queued. A plain pickle copies each tensor's bytes instead."""
    return pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)


def _task_error(error: BaseException) -> TaskError:
    return TaskError("".join(traceback.format_exception(error)))


def _in_one_thread(fn: Callable[..., R], *args: Any) -> R:
    torch.set_num_threads(1)  # a Dask worker may have been started with more
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        _undo_malloc_trim()
    return fn(*args)


def _undo_malloc_trim() -> None:
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which turns off glibc's
    adaptive mmap threshold: every tensor above 128 KiB is then mmap'ed and faulted in anew, and
    the default grid trains about 1.4× slower. Fix both thresholds where glibc would have let
    them grow."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to undo
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's ceiling for the adaptive threshold
        mallopt(M_TRIM_THRESHOLD, 64 << 20)  # twice it, as glibc keeps them


class DaskExecutor:
    """Runs tasks on the Dask scheduler at ``address``; with no address, on a ``LocalCluster``
    of ``workers`` processes with one thread each, closed when ``map`` ends.

    An argument object that several tasks share (the data of a dataset) is sent to every worker
    once, not once per task. A task whose worker dies is rerun on another worker, up to Dask's
    ``distributed.scheduler.allowed-failures`` times (3 by default, a setting of the scheduler);
    after that it comes back as a ``TaskError``, like a task that raised.
    """

    def __init__(self, address: str = "", workers: int = 1) -> None:
        self.address = address
        self.workers = workers

    def map(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R | TaskError]]:
        if not tasks:
            return
        environ = dict(os.environ)  # a nanny writes its worker's variables into this process's
        try:
            yield from self._run(fn, tasks)
        finally:
            os.environ.clear()
            os.environ.update(environ)

    def _run(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R | TaskError]]:
        # the scheduler's and workers' INFO chatter would bury the grid's progress lines; the
        # variable is read when distributed is imported, here and in each worker process
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        from distributed import Client, LocalCluster, as_completed

        logging.getLogger("distributed").setLevel(os.environ["DASK_LOGGING__DISTRIBUTED"].upper())
        cluster = None
        if self.address:
            try:
                client = Client(self.address, set_as_default=False)
            except OSError as error:
                raise ConnectionError(
                    f"no Dask scheduler answers at {self.address} (train.dask.address): {error}"
                ) from error
        else:
            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                # a free port: two clusters at once must not fight over the default 8787
                dashboard_address="127.0.0.1:0",
            )
            client = Client(cluster, set_as_default=False)
        try:
            info = client.scheduler_info(n_workers=-1)
            log.info(
                "Dask: %d task(s) on %s with %d worker(s)%s",
                len(tasks),
                client.scheduler.address,
                len(info["workers"]),
                f"; dashboard {client.dashboard_link}" if _has_dashboard(info) else "",
            )
            sent = _scatter_shared(client, tasks)
            token = uuid.uuid4().hex[:8]
            futures = {
                client.submit(
                    _in_one_thread,
                    fn,
                    *[sent.get(id(arg), arg) for arg in args],
                    key=f"{getattr(fn, '__name__', 'task')}-{token}-{index}",
                    pure=False,
                ): index
                for index, args in enumerate(tasks)
            }
            try:
                for future in as_completed(futures, loop=client.loop):
                    if future.status == "finished":
                        result: R | TaskError = future.result()
                    else:
                        result = _task_error(future.exception())
                    future.release()
                    yield futures[future], result
            except BaseException:
                client.cancel(list(futures))  # Ctrl-C or a generator closed early
                raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _scatter_shared(client: Any, tasks: Sequence[tuple[Any, ...]]) -> dict[int, Any]:
    """Send every argument object used by more than one task to all workers once: its future
    by ``id`` of the object."""
    uses = Counter(id(arg) for args in tasks for arg in args)
    shared = {id(arg): arg for args in tasks for arg in args if uses[id(arg)] > 1}
    if not shared:
        return {}
    futures = client.scatter(list(shared.values()), broadcast=True, hash=False)
    return dict(zip(shared, futures, strict=True))


def _has_dashboard(scheduler_info: dict[str, Any]) -> bool:
    """The scheduler serves its dashboard pages only where bokeh (the ``dashboard`` extra) is
    installed; without it the port answers health checks alone."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return "dashboard" in scheduler_info["services"]


def make_executor(workers: int, kind: str = "local", address: str = "") -> Executor:
    """The executor of ``train.executor``: ``local`` runs one worker in-process and more in a
    process pool; ``dask`` runs on the scheduler at ``address``, or a LocalCluster of
    ``workers`` processes when it is empty."""
    if kind == "dask":
        return DaskExecutor(address, workers)
    return SequentialExecutor() if workers <= 1 else ProcessPoolExecutor(workers)
