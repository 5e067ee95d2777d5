"""dask-jobqueue SLURMCluster through make_client against a real SLURM (``-m slurm``).

``.ci/slurm/start-slurm.sh`` starts a one-node SLURM on localhost (as root);
these tests then submit real worker jobs with ``sbatch``. They are skipped when
``sbatch`` is absent or SLURM does not answer. Settings come from the standard
``jobqueue.slurm`` dask config, as on a real site; only the CI-specific ones
(loopback interface, log folder) are set here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import dask
import numpy as np
import pytest

from lsic.cluster import make_client
from lsic.pipeline.errors import ClusterError

pytestmark = pytest.mark.slurm



def _slurm_ready() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found on PATH (start SLURM with .ci/slurm/start-slurm.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0 or not any(s in out.stdout for s in ("idle", "mixed")):
        return f"no idle SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


_reason = _slurm_ready()
if _reason:
    pytestmark = [pytest.mark.slurm, pytest.mark.skip(reason=_reason)]


@pytest.fixture
def slurm_config(tmp_path):
    """What a site's jobqueue.yaml would hold (CI: one node on loopback)."""
    settings = {
        "jobqueue.slurm.interface": os.environ.get("LSIC_TEST_SLURM_INTERFACE", "lo"),
        "jobqueue.slurm.walltime": "00:10:00",
        "jobqueue.slurm.log-directory": str(tmp_path / "logs"),
        "jobqueue.slurm.local-directory": str(tmp_path / "worker-space"),
        "jobqueue.slurm.death-timeout": 30,
        "lsic.cluster.queue-timeout": "120s",
    }
    if os.environ.get("SLURM_PARTITION"):
        settings["jobqueue.slurm.queue"] = os.environ["SLURM_PARTITION"]
    with dask.config.set(settings):
        yield tmp_path


def _helpers():
    """A task and an actor class for the workers.

    Defined inside a function so they are pickled by value: the SLURM workers
    cannot import this test module.
    """
    import os

    def where() -> tuple[int, str | None]:
        return os.getpid(), os.environ.get("SLURM_JOB_ID")

    class Counter:
        """A tiny stateful actor."""

        def __init__(self, start: int) -> None:
            self.n = start

        def increment(self, k: int = 1) -> int:
            self.n += k
            return self.n

        def where(self) -> tuple[int, str | None]:
            return where()

    return where, Counter


def _squeue(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()


def test_extract_sizing_runs_tasks_and_a_pinned_actor(slurm_config):
    name = f"lsic-test-{os.getpid()}-x"
    _where, Counter = _helpers()
    with make_client("slurm", stage="extract", cores=2, memory="2GB", workers=2, job_name=name) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert sorted(w["nthreads"] for w in workers.values()) == [1, 1]  # one job, two 1-thread workers
        assert len(_squeue(name)) == 1
        places = dict(zip(workers, client.gather([client.submit(_where, workers=[w], pure=False) for w in workers])))
        pids = {pid for pid, _ in places.values()}
        jobs = {job for _, job in places.values()}
        assert len(pids) == 2 and os.getpid() not in pids
        assert len(jobs) == 1 and None not in jobs  # both run inside the one SLURM job
        # the nanny preload lsic.cluster.worker_env ran on the node: no MALLOC_TRIM_THRESHOLD_
        assert client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_") == {w: None for w in workers}
        # plain tasks spread over the workers
        assert sum(client.gather(client.map(lambda i: i * i, range(50)))) == sum(i * i for i in range(50))
        # an actor pinned to one worker runs in exactly that worker's process
        target = sorted(workers)[-1]
        actor = client.submit(Counter, 10, actor=True, workers=[target]).result()
        for _ in range(5):
            actor.increment().result()
        assert actor.increment(0).result() == 15
        assert actor.where().result() == places[target]
        del actor
    deadline = time.monotonic() + 30
    while _squeue(name) and time.monotonic() < deadline:  # closing the client scancels the job
        time.sleep(0.5)
    assert _squeue(name) == []


def test_train_sizing_is_one_worker_per_job_with_all_cores(slurm_config):
    name = f"lsic-test-{os.getpid()}-t"
    _, Counter = _helpers()
    with make_client("slurm", stage="train", cores=2, memory="1GB", workers=2, job_name=name) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert [w["nthreads"] for w in workers.values()] == [2, 2]
        jobs = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        assert len(jobs) == 2 and None not in jobs  # one job (host) per worker
        # the job script's export reached the workers: no statistical profiler while training
        assert set(client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks).values()) == {False}
        actors = [client.submit(Counter, i, actor=True, workers=[w]).result() for i, w in enumerate(sorted(workers))]
        assert [a.increment(1).result() for a in actors] == [1, 2]
        assert {a.where().result()[1] for a in actors} == jobs  # one actor per job
        del actors


def test_refused_submission_is_a_one_line_error(slurm_config):
    with pytest.raises(ClusterError) as info:
        make_client("slurm", stage="train", cores=1, memory="1GB", queue="no-such-partition")
    msg = str(info.value)
    assert "sbatch refused" in msg and "partition" in msg.lower()
    assert "\n" not in msg


def test_job_queued_too_long_is_a_one_line_error(slurm_config):
    name = f"lsic-test-{os.getpid()}-q"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        make_client(
            "slurm",
            stage="train",
            cores=1,
            memory="1GB",
            job_name=name,
            job_extra_directives=["--begin=now+1hour"],  # stays PENDING (BeginTime)
            queue_timeout="3s",
        )
    msg = str(info.value)
    assert "only 0 of 1 Dask workers started within 3s" in msg and "squeue" in msg and "\n" not in msg
    assert time.monotonic() - t0 < 60
    deadline = time.monotonic() + 30
    while _squeue(name) and time.monotonic() < deadline:  # the pending job was cancelled
        time.sleep(0.5)
    assert _squeue(name) == []


# ------------------------------------------------------- workflows through SLURM


def _workflow_experiment(root, store_url):
    from lsic.workflows.config import parse_experiment

    sets = [
        {"name": "hog_lcc", "descriptor": "hog", "coding": "lcc", "codebook_size": 8, "kappa": 3,
         "pyramid": [[1, 1], [2, 2]], "pooling": "max"},
        {"name": "lbp_svc", "descriptor": "lbp", "coding": "svc", "codebook_size": 4, "s": 1.0,
         "pyramid": [[1, 1]]},
    ]
    return parse_experiment(
        {
            "dataset": {"root": str(root), "train_per_class": 6, "val_per_class": 1, "test_per_class": 3},
            "images": {"max_side": 96, "patch_sizes": [16, 24], "step": 8},
            "codebook": {"sample_images": 12, "descriptors_per_image": 40},
            "feature_sets": sets,
            "store": {"url": str(store_url), "chunk_rows": 8},
            "train": {"epochs": 2, "lam": 1e-3, "eta0": 0.05, "mode": "exact", "actors": 2},
            "seed": 5,
        }
    )


def _store_arrays(url) -> dict:
    import zarr

    g = zarr.open_group(str(url), mode="r")
    out = {k: g[k][...] for k in ("labels", "split", "valid")}
    for name in g["features"].group_keys():
        out[f"X/{name}"] = g[f"features/{name}/X"][...]
    if "scores" in g:
        for name in g["scores"].group_keys():
            for split in g[f"scores/{name}"].array_keys():
                out[f"scores/{name}/{split}"] = g[f"scores/{name}/{split}"][...]
    return out


def test_extraction_and_training_through_slurm_equal_the_local_run(slurm_config, image_folder):
    extract = pytest.importorskip("lsic.workflows.extract")
    train = pytest.importorskip("lsic.workflows.train")
    if not (hasattr(extract, "run_extract") and hasattr(train, "run_train")):
        pytest.skip("lsic.workflows.extract.run_extract / train.run_train not available")
    tmp = slurm_config
    results = {}
    for where in ("local", "slurm"):
        exp = _workflow_experiment(image_folder, tmp / f"{where}.zarr")
        if where == "local":
            ext_client = make_client("local", stage="extract", workers=2)
        else:  # one job, two single-threaded workers
            ext_client = make_client("slurm", stage="extract", cores=2, memory="2GB", workers=2)
        with ext_client:
            extract.run_extract(exp, client=ext_client, progress=False)
        if where == "local":
            train_client = make_client("local", stage="train", workers=2, threads_per_worker=1)
        else:  # two jobs (hosts), one worker with all (here 1) cores each
            train_client = make_client("slurm", stage="train", cores=1, memory="1GB", workers=2)
        with train_client:
            if where == "slurm":
                jobs = set(train_client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
                assert len(jobs) == 2 and None not in jobs
            train.run_train(exp, client=train_client, progress=False)
        results[where] = _store_arrays(exp.store.url)
    local, slurm = results["local"], results["slurm"]
    assert sorted(local) == sorted(slurm) and any(k.startswith("scores/") for k in local)
    for key in local:
        if key.startswith("scores/"):
            np.testing.assert_allclose(slurm[key], local[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(slurm[key], local[key], err_msg=key)
