"""Result files and dataset paths shared by the benchmark scripts.

Every benchmark ends with :func:`finish`: it writes one JSON result file under
``benchmarks/results/<benchmark>/`` (the command, the commit, a description of
the machine, the date and the figures) and prints the figures as one JSON
object on the last line of standard output. The documentation renders its
benchmark pages from these files, so a number quoted in the docs is a number a
run wrote.

A run whose inputs failed reports no figure: :func:`fail` prints a one-line
error and exits non-zero, and :func:`finish` refuses figures when the
``inputs_failed`` count it is given is not zero.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["REPO", "RESULTS", "dataset_root", "fail", "finish", "machine", "photos", "scratch_dir", "write_result"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``<script>: error: <message>`` on stderr and exit with ``code`` (no figure is printed)."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def dataset_root(given: str | os.PathLike[str] | None, name: str = "caltech101", *, flag: str = "--data") -> Path:
    """The dataset folder a benchmark reads, resolved to an absolute path.

    ``given`` (the script's ``--data`` value) wins; without it the shared copy
    beside the repository (``../shared/datasets/<name>``) is used when it is
    there. Otherwise a one-line error names the flag to pass.
    """
    if given is not None:
        root = Path(given).expanduser().resolve()
        if not root.is_dir():
            fail(f"{flag} {given}: no such folder; pass the {name} dataset root (a folder of class folders)")
        return root
    shared = (REPO.parent / "shared" / "datasets" / name).resolve()
    if shared.is_dir():
        return shared
    fail(f"no {name} dataset given: pass {flag} DIR (a folder of class folders, see the docs' data page)")


def photos(root: Path, pattern: str = "*/*.jpg") -> list[Path]:
    """The photos of a folder of class folders (``root/<class>/<image>.jpg``), sorted, as absolute paths.

    A folder without any is a one-line error naming it, not an empty benchmark.
    """
    files = sorted(Path(root).resolve().glob(pattern))
    if not files:
        fail(f"no photos ({pattern}) under {root}; pass --data with a folder of class folders")
    return files


def scratch_dir(given: str | os.PathLike[str] | None, prefix: str) -> Path:
    """A scratch folder for a benchmark's stores, as an absolute path.

    ``given`` is created if needed and kept (a later run can reuse what is in
    it); without it a new temporary folder is made and removed when the
    script exits, also when it exits with an error.
    """
    if given is not None:
        path = Path(given).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def machine() -> dict[str, Any]:
    """A short description of the machine: CPU, cores, memory, OS, Python and numpy, load average."""
    import numpy as np

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg": load,
    }


def write_result(benchmark: str, figures: Mapping[str, Any], *, argv: list[str] | None = None,
                 results_dir: Path | None = None) -> Path:
    """Write one result file and return its path.

    The file is ``<results_dir>/<benchmark>/<UTC time>-<commit>.json`` holding
    ``benchmark``, ``command``, ``commit`` (``+dirty`` when the work tree had
    changes), ``date`` (ISO 8601, UTC), ``machine`` and ``figures``.
    ``LSIC_BENCH_RESULTS`` (a folder) replaces the default
    ``benchmarks/results``, e.g. to keep a trial run out of the repository.
    """
    argv = list(sys.argv if argv is None else argv)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    folder = Path(results_dir or os.environ.get("LSIC_BENCH_RESULTS") or RESULTS) / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{commit.replace('+', '-')}.json"
    script = Path(argv[0]).resolve()
    try:
        script_name = str(script.relative_to(REPO))
    except ValueError:
        script_name = script.name
    record = {
        "benchmark": benchmark,
        "command": " ".join(["python", shlex.quote(script_name), *map(shlex.quote, argv[1:])]),
        "commit": commit,
        "date": now.isoformat().replace("+00:00", "Z"),
        "machine": machine(),
        "figures": dict(figures),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    tmp.replace(path)
    return path


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays, paths and sets."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish(benchmark: str, figures: Mapping[str, Any], *, inputs_failed: int = 0, inputs: int | None = None,
           record: bool = True) -> None:
    """End a benchmark: write its result file and print its figures as the JSON last line.

    ``inputs`` and ``inputs_failed`` (images that could not be read, tasks
    that failed) are added to the figures. When any input failed the run
    reports no figure: a one-line error and exit code 1.
    """
    if inputs_failed:
        of = f" of {inputs}" if inputs is not None else ""
        fail(f"{inputs_failed}{of} inputs failed; no figure is reported (see the messages above)")
    out = dict(figures)
    if inputs is not None:
        out["inputs"] = inputs
        out["inputs_failed"] = inputs_failed
    if record:
        path = write_result(benchmark, out)
        print(f"result file: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)
    print(json.dumps(out, default=_plain))
