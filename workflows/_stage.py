"""What every distributed stage does the same way: own a client, execute tasks, pin BLAS, cache per worker.

Extraction, training and batch prediction each run on a Dask client that is
either given (``lsic run`` passes one per stage, tests pass theirs) or made
for the stage and closed again (:func:`stage_client`). Task graphs run with a
progress bar and, where a failed task must not lose the finished ones, keep
going past errors (:func:`execute`). Tasks that compute features pin BLAS to
one thread (:func:`single_blas_thread`) and keep what they load once per
worker process (:class:`WorkerCache`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stage_client(cluster: Mapping[str, Any], stage: str, client: Any = None, *,
                 say: Callable[[str], None] | None = None) -> Iterator[Any]:
    """``client`` as it is, or a client from :func:`lsic.cluster.make_client` sized for ``stage``, closed on exit.

    ``cluster`` holds the experiment's cluster settings; ``say`` (optional)
    announces the dashboard of a client made here.
    """
    if client is not None:
        yield client
        return
    from lsic.cluster import make_client

    client = make_client(**{**dict(cluster), "stage": stage})
    try:
        link = getattr(client, "dashboard_link", None)
        if say is not None and link:
            say(f"{stage}: Dask dashboard at {link} (while the stage runs)")
        yield client
    finally:
        client.close()


def execute(client: Any, tasks: list[Any], label: str, progress: bool, *, unit: str,
            allow_errors: bool = False) -> list[Any]:
    """Compute delayed ``tasks`` on ``client`` with a progress bar; results in completion order.

    With ``allow_errors`` a failed task's exception takes its place in the
    results (logged as a warning) and the others run on; without, the first
    failure cancels the rest and is raised.
    """
    from distributed import as_completed

    if not tasks:
        return []
    futures = client.compute(tasks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc=label, unit=unit, leave=False)
    out: list[Any] = []
    try:
        for fut in as_completed(futures, loop=client.loop):
            if fut.status == "error":
                exc = fut.exception()
                if not allow_errors:
                    raise exc
                log.warning("%s: a task failed: %r", label, exc)
                out.append(exc)
            else:
                out.append(fut.result())
            if bar is not None:
                bar.update(1)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()
    return out


def single_blas_thread() -> None:
    """Pin BLAS to one thread in the process running feature tasks (extraction, prediction).

    They parallelise over images, and a multi-threaded GEMM (PCA projection,
    codeword distances) sums in an order that depends on how many threads it
    gets, so features would differ in the last bit between a first run and a
    resumed one. Set once and left set: restoring it per task would race
    between tasks sharing one process.
    """
    threadpool_limits(limits=1, user_api="blas")


class WorkerCache:
    """Values loaded once per worker process and key (codebooks of a store, a model).

    Parameters
    ----------
    max_entries : int, optional
        Keep at most this many values: loading a new key drops the others
        first (a model's weights can be gigabytes). Default: unbounded.

    Notes
    -----
    One load at a time per cache: tasks of one worker process that want the
    same value wait for the first load instead of loading it again.
    """

    def __init__(self, max_entries: int | None = None) -> None:
        self.max_entries = max_entries
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The value of ``key``, from ``load()`` on first use in this process."""
        with self._lock:
            if key not in self._values:
                if self.max_entries is not None and len(self._values) >= self.max_entries:
                    self._values.clear()
                self._values[key] = load()
            return self._values[key]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
