"""Settings, sizing, CLI flags and job-script text: no scheduler, no batch system needed."""

from __future__ import annotations

import argparse
import os

import dask
import pytest

from lsic.cluster import add_cluster_arguments, cluster_options, job_script, make_client
from lsic.cluster._jobqueue import jobqueue_sizing
from lsic.cluster._local import local_sizing
from lsic.cluster.config import resolve
from lsic.pipeline.errors import ClusterError, ConfigError


def test_defaults_come_from_dask_config():
    s = resolve(None, None, {})
    assert s.kind == "local"
    assert s.host == "127.0.0.1"
    assert s.dashboard_address.startswith("127.0.0.1:")
    assert s.timeout == 10 and s.queue_timeout == 300
    assert dask.config.get("lsic.cluster.kind") == "local"
    with dask.config.set({"lsic.cluster.kind": "address", "lsic.cluster.scheduler": "tcp://h:1"}):
        s = resolve(None, None, {})
        assert (s.kind, s.scheduler) == ("address", "tcp://h:1")
        # an explicit override wins over the config; None means "not given"
        s = resolve(None, None, {"scheduler": "tcp://other:2", "workers": None})
        assert s.scheduler == "tcp://other:2" and s.workers is None


def test_dash_and_underscore_spellings():
    s = resolve("local", "extract", {"threads-per-worker": 2, "memory_limit": "1GB", "queue-timeout": "2m"})
    assert s.threads_per_worker == 2 and s.memory_limit == "1GB" and s.queue_timeout == 120


@pytest.mark.parametrize(
    ("kind", "stage", "overrides", "needle"),
    [
        ("mesos", None, {}, "'mesos'"),
        ("local", "predict", {}, "'predict'"),
        ("local", None, {"wrokers": 2}, "cluster.wrokers"),
        ("local", None, {"workers": 0}, "cluster.workers=0"),
        ("local", None, {"workers": "two"}, "cluster.workers='two'"),
        ("local", None, {"timeout": "soon"}, "cluster.timeout='soon'"),
        ("local", None, {"tls_ca_file": "/nonexistent/ca.pem"}, "tls.cert"),
        ("local", "train", {"train_worker_profile": "no"}, "train-worker-profile='no'"),
    ],
)
def test_bad_settings_are_one_line_config_errors(kind, stage, overrides, needle):
    with pytest.raises(ConfigError) as info:
        resolve(kind, stage, overrides)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_jobqueue_keywords_pass_through_and_are_ignored_locally():
    s = resolve("slurm", None, {"queue": "gpu", "account": "proj", "job_extra_directives": ["--exclusive"]})
    assert s.jobqueue == {"queue": "gpu", "account": "proj", "job_extra_directives": ["--exclusive"]}
    with dask.config.set({"lsic.cluster.jobqueue": {"walltime": "01:00:00"}}):
        s = resolve("slurm", None, {"queue": "gpu"})
        assert s.jobqueue == {"walltime": "01:00:00", "queue": "gpu"}


def test_cli_flags_round_trip():
    parser = add_cluster_arguments(argparse.ArgumentParser())
    assert cluster_options(parser.parse_args([])) == {"kind": None}
    opts = cluster_options(
        parser.parse_args(
            ["--cluster", "slurm", "--workers", "4", "--threads-per-worker", "2", "--memory-limit", "2GB"]
        )
    )
    assert opts == {"kind": "slurm", "workers": 4, "threads_per_worker": 2, "memory_limit": "2GB"}
    # --scheduler alone implies the address kind
    opts = cluster_options(parser.parse_args(["--scheduler", "tcp://head:8786", "--performance-report"]))
    assert opts == {"kind": "address", "scheduler": "tcp://head:8786", "performance_report": True}
    assert cluster_options(parser.parse_args(["--performance-report", "out"]))["performance_report"] == "out"
    with pytest.raises(SystemExit):
        parser.parse_args(["--cluster", "mesos"])
    # the options are valid make_client keywords
    kind = opts.pop("kind")
    assert resolve(kind, "train", opts).report_dir == "reports"


@pytest.mark.parametrize(
    ("stage", "workers", "threads", "expected"),
    [
        ("extract", None, None, (8, 1)),  # many single-threaded workers
        ("extract", None, 2, (4, 2)),
        ("extract", 3, None, (3, 1)),
        ("train", None, None, (1, 8)),  # one process, every core a thread
        ("train", 2, None, (2, 4)),
        (None, None, None, (None, None)),  # dask's own defaults
    ],
)
def test_local_sizing_per_stage(stage, workers, threads, expected):
    s = resolve("local", stage, {"workers": workers, "threads_per_worker": threads})
    assert local_sizing(s, n_cpus=8) == expected


def test_jobqueue_sizing_per_stage():
    kw, jobs, per_job = jobqueue_sizing(resolve("slurm", "extract", {"cores": 8, "memory": "16GB"}))
    assert (kw["cores"], kw["processes"], jobs, per_job) == (8, 8, 1, 8)
    kw, jobs, per_job = jobqueue_sizing(resolve("slurm", "extract", {"cores": 8, "memory": "16GB", "workers": 20}))
    assert (kw["processes"], jobs, per_job) == (8, 3, 8)
    kw, jobs, per_job = jobqueue_sizing(resolve("slurm", "train", {"cores": 8, "memory": "16GB", "workers": 4}))
    assert (kw["cores"], kw["processes"], jobs, per_job) == (8, 1, 4, 1)
    # an explicit processes override wins over the stage rule
    kw, _, _ = jobqueue_sizing(resolve("slurm", "train", {"cores": 8, "memory": "16GB", "processes": 2}))
    assert kw["processes"] == 2
    # memory_limit is per worker; a job holds `processes` workers
    kw, _, _ = jobqueue_sizing(resolve("pbs", "extract", {"cores": 4, "memory_limit": "1GiB"}))
    assert dask.utils.parse_bytes(kw["memory"]) == 4 * 2**30


def test_jobqueue_needs_cores_and_memory_from_somewhere():
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(ClusterError, match=r"jobqueue\.slurm\.cores"):
            jobqueue_sizing(resolve("slurm", "extract", {}))
        with pytest.raises(ClusterError, match=r"jobqueue\.slurm\.memory"):
            jobqueue_sizing(resolve("slurm", "extract", {"cores": 2}))
    # from the site's jobqueue.yaml (dask.config), with nothing passed explicitly
    with dask.config.set({"jobqueue.slurm.cores": 6, "jobqueue.slurm.memory": "12GB"}):
        kw, _, _ = jobqueue_sizing(resolve("slurm", "train", {}))
        assert kw["cores"] == 6 and kw["processes"] == 1


def _directives(script: str, prefix: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith(prefix)]


def test_slurm_job_script_text_per_stage():
    with dask.config.set({"jobqueue.slurm.queue": "batch", "jobqueue.slurm.account": "lsic-proj"}):
        train = job_script("slurm", stage="train", cores=16, memory="64GB", walltime="02:00:00")
        extract = job_script("slurm", stage="extract", cores=16, memory="64GB")
    d = _directives(train, "#SBATCH")
    assert "#SBATCH -p batch" in d and "#SBATCH -A lsic-proj" in d
    assert "#SBATCH --cpus-per-task=16" in d and "#SBATCH -t 02:00:00" in d
    assert "#SBATCH --mem=60G" in d
    worker = [ln for ln in train.splitlines() if "dask_worker" in ln][0]
    assert "--nthreads 16" in worker and "--nworkers" not in worker  # one process, 16 threads
    worker = [ln for ln in extract.splitlines() if "dask_worker" in ln][0]
    assert "--nthreads 1" in worker and "--nworkers 16" in worker  # 16 single-threaded processes


def test_training_jobs_turn_the_worker_profiler_off_unless_asked():
    export = "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"
    with dask.config.set({"jobqueue.slurm.job-script-prologue": ["module load site-python"]}):
        train = job_script("slurm", stage="train", cores=4, memory="8GB").splitlines()
        extract = job_script("slurm", stage="extract", cores=4, memory="8GB").splitlines()
        with dask.config.set({"lsic.cluster.train-worker-profile": True}):
            kept = job_script("slurm", stage="train", cores=4, memory="8GB").splitlines()
    # before the worker starts, after the site's own prologue (kept)
    assert train.index("module load site-python") < train.index(export) < [
        i for i, ln in enumerate(train) if "dask_worker" in ln][0]
    assert export not in extract and export not in kept and "module load site-python" in extract
    assert resolve("local", "train", {}).worker_profile is False
    assert resolve("local", "extract", {}).worker_profile is True
    assert resolve("local", "train", {"train_worker_profile": True}).worker_profile is True


def test_pbs_and_sge_job_script_text():
    pbs = job_script("pbs", stage="train", cores=8, memory="32GB", queue="workq", walltime="01:00:00")
    d = _directives(pbs, "#PBS")
    assert "#PBS -q workq" in d and any("ncpus=8" in x for x in d) and "#PBS -l walltime=01:00:00" in d
    assert "--nthreads 8" in pbs
    sge = job_script("sge", stage="extract", cores=4, memory="8GB", queue="all.q")
    assert "#$ -q all.q" in _directives(sge, "#$") and "--nworkers 4" in sge


def test_missing_submit_command_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch/qsub here
    for kind, command in (("slurm", "sbatch"), ("pbs", "qsub"), ("lsf", "bsub")):
        with pytest.raises(ClusterError) as info:
            make_client(kind, cores=1, memory="1GB")
        msg = str(info.value)
        assert f"`{command}`" in msg and "\n" not in msg


def test_job_script_does_not_need_a_batch_system(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "#SBATCH" in job_script("slurm", stage="train", cores=2, memory="2GB")
    assert os.environ["PATH"] == str(tmp_path)


def test_batch_workers_load_lsic_worker_env_before_spawning():
    script = job_script("slurm", stage="extract", cores=4, memory="8GB")
    worker = [ln for ln in script.splitlines() if "dask_worker" in ln][0]
    assert "--preload-nanny lsic.cluster.worker_env" in worker
    # a site's own worker arguments are kept, and the preload is not added twice
    with dask.config.set({"jobqueue.slurm.worker-extra-args": ["--lifetime", "1h"]}):
        script = job_script("slurm", stage="train", cores=4, memory="8GB",
                            worker_extra_args=["--lifetime", "2h", "--preload-nanny", "lsic.cluster.worker_env"])
    worker = [ln for ln in script.splitlines() if "dask_worker" in ln][0]
    assert "--lifetime 2h" in worker and worker.count("lsic.cluster.worker_env") == 1


class _FakeNanny:
    def __init__(self, env):
        self.pre_spawn_env = dict(env)


def test_worker_env_preload_drops_distributed_malloc_trim_unless_asked(monkeypatch):
    from lsic.cluster import worker_env

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    # what distributed's nanny computes from its own defaults on a node that never imported lsic
    nanny = _FakeNanny({"MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "6640"})
    worker_env.dask_setup(nanny)
    env = nanny.pre_spawn_env
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONHASHSEED"] == "6640"  # the rest is kept
    # a site that wants trimming sets it in its dask config (or exports it: the worker inherits it)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 131072}):
        nanny = _FakeNanny({"MALLOC_TRIM_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"})
        worker_env.dask_setup(nanny)
        assert nanny.pre_spawn_env["MALLOC_TRIM_THRESHOLD_"] == "131072"


def test_spec_cluster_internals_used_by_submit_jobs():
    """Fails loudly when distributed changes what lsic.cluster._jobqueue.submit_jobs relies on."""
    import inspect

    from distributed.core import Status
    from distributed.deploy.spec import ProcessInterface, SpecCluster

    assert list(inspect.signature(SpecCluster._correct_state).parameters) == ["self"], "_correct_state changed"
    assert list(inspect.signature(SpecCluster.new_worker_spec).parameters) == ["self"], "new_worker_spec changed"
    assert "self.worker_spec" in inspect.getsource(SpecCluster.__init__), "SpecCluster.worker_spec changed"
    assert {"created", "failed"} <= {s.name for s in Status}
    assert "status" in inspect.getsource(ProcessInterface.__init__)


def test_default_processes_per_job_is_dask_jobqueues_choice():
    import dask_jobqueue
    from lsic.cluster import config as cconfig
    from lsic.cluster._jobqueue import jobqueue_sizing

    settings = cconfig.resolve("slurm", None, {"cores": 8, "memory": "16GB"})
    _, _, per_job = jobqueue_sizing(settings)
    job = dask_jobqueue.SLURMCluster.job_cls("tcp://127.0.0.1:8786", name="x", cores=8, memory="16GB")
    assert per_job == job.worker_processes >= 1


def test_importing_lsic_cluster_leaves_distributeds_worker_env_alone():
    from lsic.cluster.worker_env import _shipped_defaults, pre_spawn_environ

    shipped = _shipped_defaults()
    if "MALLOC_TRIM_THRESHOLD_" in shipped:  # distributed's own default is still in force ...
        assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == shipped[
            "MALLOC_TRIM_THRESHOLD_"]
    assert "MALLOC_TRIM_THRESHOLD_" not in pre_spawn_environ()  # ... but not for lsic's clusters
