"""Local cluster (loopback only), address mode against a scheduler the test starts, reports."""

from __future__ import annotations

import logging
import os
import socket
import time
from urllib.parse import urlparse

import pytest
from dask.system import CPU_COUNT
from distributed import LocalCluster

from lsic.cluster import make_client
from lsic.pipeline.errors import ClusterError


def _hosts(client) -> set[str]:
    info = client.scheduler_info(n_workers=-1)
    addrs = [client.scheduler.address, *info["workers"]]
    addrs += [w["nanny"] for w in info["workers"].values() if w.get("nanny")]
    return {urlparse(a).hostname for a in addrs}


def test_local_extract_listens_on_loopback_only(caplog):
    caplog.set_level(logging.INFO, logger="lsic.cluster")
    with make_client(stage="extract", workers=2) as client:
        cluster = client.cluster
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert _hosts(client) == {"127.0.0.1"}
        link = urlparse(client.dashboard_link)
        assert link.hostname == "127.0.0.1" and link.port not in (None, 8787, 0)
        nthreads = sorted(w["nthreads"] for w in client.scheduler_info()["workers"].values())
        assert nthreads == [1, 1]  # extraction: single-threaded workers
        workers = list(client.scheduler_info()["workers"])
        pids = set(client.gather([client.submit(os.getpid, pure=False, workers=[w]) for w in workers]))
        assert len(pids) == 2 and os.getpid() not in pids  # separate processes
        assert any(client.dashboard_link in r.getMessage() and "extract" in r.getMessage() for r in caplog.records)
    # closing the client closed the cluster it started
    assert cluster.status.name == "closed"


def _malloc_trim():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_glibc_malloc_thresholds(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with make_client(stage="extract", workers=1) as client:
        # distributed's default 65536 would be set here (see cluster.yaml)
        assert list(client.run(_malloc_trim).values()) == [None]


def _profiling(dask_worker):
    return "profile" in dask_worker.periodic_callbacks


def test_local_train_is_one_process_with_every_core():
    with make_client("local", stage="train") as client:
        workers = client.scheduler_info()["workers"]
        assert [w["nthreads"] for w in workers.values()] == [CPU_COUNT]
        # no statistical profiler in training workers (cluster.yaml: train-worker-profile)
        assert list(client.run(_profiling).values()) == [False]
    with make_client("local", stage="extract", workers=1) as client:
        assert list(client.run(_profiling).values()) == [True]


def test_performance_report_written_on_close(tmp_path):
    with make_client(stage="extract", workers=1, performance_report=str(tmp_path / "reports")) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
    files = list((tmp_path / "reports").glob("extract-performance-report-*.html"))
    assert len(files) == 1 and "<html" in files[0].read_text()[:2000].lower()


@pytest.fixture
def running_scheduler():
    """A scheduler (with one in-process worker) started by the test, not by lsic."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster


def test_address_mode_uses_the_running_scheduler(running_scheduler):
    with make_client("address", scheduler=running_scheduler.scheduler_address) as client:
        assert client.scheduler.address == running_scheduler.scheduler_address
        assert client.submit(lambda x: x * 2, 21).result() == 42
    # the cluster belongs to whoever started it: still running after the client closed
    assert running_scheduler.status.name == "running"
    with make_client("address", scheduler=running_scheduler.scheduler_address, stage="train") as client:
        assert len(client.scheduler_info()["workers"]) == 1  # not resized per stage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_one_line_error_within_the_timeout():
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        make_client("address", scheduler=address, timeout="1s")
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert address in msg and "within 1s" in msg and "\n" not in msg
    assert elapsed < 20  # gave up (no hang); generous bound for a loaded CI machine


def test_address_mode_needs_an_address():
    with pytest.raises(ClusterError, match="--scheduler"):
        make_client("address")
