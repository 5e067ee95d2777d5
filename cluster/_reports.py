"""Monitoring: the dashboard link when a stage starts, optional performance-report HTML."""

from __future__ import annotations

import contextlib
import logging
import os
import time

from distributed import Client, performance_report

log = logging.getLogger("lsic.cluster")


def log_dashboard(client: Client, stage: str | None) -> str | None:
    """Log (INFO, logger ``lsic.cluster``) where the Dask dashboard of ``client`` is.

    Returns the link, or ``None`` when the scheduler serves no dashboard
    (e.g. ``bokeh`` is not installed).
    """
    try:
        link = client.dashboard_link
    except Exception:  # pragma: no cover - no dashboard service
        link = None
    what = f"stage {stage}" if stage else "lsic"
    if link:
        log.info("%s: Dask dashboard at %s (scheduler %s)", what, link, client.scheduler.address)
    else:
        log.info("%s: Dask scheduler %s (no dashboard)", what, client.scheduler.address)
    return link


def report_path(folder: str, stage: str | None) -> str:
    """``<folder>/<stage>-performance-report-<YYYYmmdd-HHMMSS>.html`` (stage ``lsic`` if None)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(folder, f"{stage or 'lsic'}-performance-report-{stamp}.html")


class StageReport:
    """A ``distributed.performance_report`` spanning the life of one client.

    :meth:`start` when the stage starts, :meth:`finish` before the client
    closes (``make_client`` does both); the HTML lands in :attr:`path`. The
    report is entered as a context manager held open in an ``ExitStack``,
    since the client outlives the call that creates it.
    """

    def __init__(self, folder: str, stage: str | None) -> None:
        self.path = report_path(folder, stage)
        self._stack: contextlib.ExitStack | None = None

    def start(self, client: Client) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        stack = contextlib.ExitStack()
        with client.as_current():
            stack.enter_context(performance_report(filename=self.path))
        self._stack = stack

    def finish(self, client: Client) -> str | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        with client.as_current():
            stack.close()
        log.info("performance report written to %s", self.path)
        return self.path
