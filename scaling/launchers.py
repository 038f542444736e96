"""Where a sweep's trunks train: in this process, in a pool of local processes, or as cluster jobs (submitit).

A launcher takes the trunks of one stage of the sweep (the calibration, the ladder, the held-out runs) and
trains each with :func:`train_trunk`, which appends every finished point's record to the sweep's
``records.jsonl`` from wherever the trunk runs. Records are keyed, so a rerun skips what any earlier launch
finished. A trunk that fails does not stop the others: when the stage has ended the launcher raises
:class:`LaunchError`, naming each failed trunk with its error and its log.

- ``local`` (``workers = 1``): in this process, one trunk after the other.
- ``local`` (``workers > 1``): that many spawned processes on this machine (one thread each by default).
- ``submitit``: one job per trunk through submitit's executor (Slurm on a cluster; ``cluster: local`` runs the
  jobs as processes of this machine, which is how the tests check it). Job folders, with each job's stdout and
  stderr, lie under ``<out>/jobs``.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

LauncherName = Literal["local", "submitit"]


class LaunchError(RuntimeError):
    """Some trunks of a stage failed; the points of the others are recorded."""


@dataclass
class LauncherConfig:
    """How the trunks of a sweep run (``iris-wm scaling sweep --launcher.*``)."""

    name: LauncherName = "local"
    """``local`` (this machine) or ``submitit`` (a job per trunk: Slurm, or submitit's local executor)."""
    workers: int = 1
    """``local``: trunks trained at once, each in its own process when more than 1."""
    threads_per_worker: int = 1
    """``local`` with several workers: the threads of each process (OMP_NUM_THREADS)."""
    cluster: str | None = None
    """``submitit``: the executor's cluster (None: Slurm where ``sbatch`` exists, else local; or ``slurm``,
    ``local``, ``debug``)."""
    parameters: dict = field(default_factory=dict)
    """``submitit``: the executor's parameters, e.g. ``{timeout_min: 60, slurm_partition: gpu, gpus_per_node: 1,
    cpus_per_task: 8}`` (see submitit's ``AutoExecutor.update_parameters``)."""
    poll_seconds: float = 2.0
    """``submitit``: how often finished jobs are looked for."""

    @property
    def in_process(self) -> bool:
        """Trunks train here, one after the other (the backend at hand; no factory needed)."""
        return self.name == "local" and self.workers == 1

    def __post_init__(self):
        if self.name not in ("local", "submitit"):
            raise ValueError(f"launcher: name must be 'local' or 'submitit'; got {self.name!r}.")
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ValueError(
                f"launcher: workers and threads_per_worker must be at least 1; got {self.workers} and "
                f"{self.threads_per_worker}."
            )
        if self.name == "submitit" and self.workers != 1:
            raise ValueError(
                "launcher: workers is for the local launcher; with submitit every trunk is its own job (set the "
                "job's resources in launcher.parameters)."
            )


@dataclass
class TrunkJob:
    """One trunk to train, picklable: what a worker process or a cluster job runs."""

    factory: Callable  # () -> a Backend, built where the job runs
    trunk: object
    spec: object
    out: Path
    records_path: Path
    log: Callable[[str], None] | None = None  # in this process: each point's line is logged as it ends

    def __call__(self) -> list[str]:
        from scaling.sweep import record_point

        lines: list[str] = []
        self.factory().train(
            self.trunk,
            self.spec,
            self.out,
            lambda b, m: (self.log or lines.append)(record_point(self.spec, self.trunk, b, m, self.records_path)),
        )
        return lines


@dataclass
class Failure:
    label: str
    error: str
    log: str | None = None

    def describe(self) -> str:
        where = f"; its log: {self.log}" if self.log else ""
        return f"{self.label}: {self.error}{where}"


def _raise_failures(failures: list[Failure]) -> None:
    if failures:
        lines = "\n".join(f"  - {f.describe()}" for f in failures)
        raise LaunchError(
            f"{len(failures)} trunk(s) failed (the points of the others are recorded; the same command reruns only "
            f"what is missing):\n{lines}"
        )


def _label(job: TrunkJob) -> str:
    t = job.trunk
    return f"{t.role} {t.series.name} {t.size.label} seed {t.seed}"


class Launcher:
    """Trains the jobs of one stage; ``done(job, lines)`` is called as each finishes (in this process)."""

    def __init__(self, config: LauncherConfig, log=print):
        self.config, self.log = config, log

    def run(
        self,
        jobs: list[TrunkJob],
        done: Callable[[TrunkJob, list[str]], None],
        announce: Callable[[int, TrunkJob], None] = lambda i, job: None,
    ) -> None:
        """Train every job; ``announce(i, job)`` as it starts (is submitted), ``done(job, lines)`` as it ends."""
        if self.config.name == "submitit":
            _raise_failures(self._submitit(jobs, done, announce))
        elif not self.config.in_process and len(jobs) > 1:
            _raise_failures(self._pool(jobs, done, announce))
        else:
            _raise_failures(self._serial(jobs, done, announce))

    def _failed(self, job: TrunkJob, error: BaseException) -> Failure:
        """A trunk's error in this process or a pool worker: its traceback logged, its one line kept."""
        self.log("".join(traceback.format_exception(error)))
        return Failure(_label(job), f"{type(error).__name__}: {error}", "the traceback above")

    def _serial(self, jobs: Iterable[TrunkJob], done, announce) -> list[Failure]:
        failures = []
        for i, job in enumerate(jobs, 1):
            announce(i, job)
            try:
                lines = job()
            except Exception as error:  # noqa: BLE001 - reported with the others at the end of the stage
                failures.append(self._failed(job, error))
                continue
            done(job, lines)
        return failures

    def _pool(self, jobs: list[TrunkJob], done, announce) -> list[Failure]:
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(self.config.threads_per_worker)  # inherited by the spawned workers
        failures = []
        try:
            with ProcessPoolExecutor(self.config.workers, mp_context=get_context("spawn")) as pool:
                running = {}
                for i, job in enumerate(jobs, 1):
                    announce(i, job)
                    running[pool.submit(job)] = job
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = running.pop(future)
                        error = future.exception()
                        if error is None:
                            done(job, future.result())
                            continue
                        failures.append(self._failed(job, error))
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        return failures

    def _submitit(self, jobs: list[TrunkJob], done, announce) -> list[Failure]:
        try:
            import submitit
        except ImportError as error:
            raise ImportError(
                "The submitit launcher needs submitit: pip install 'iris-wm[cluster]' (or pip install submitit)."
            ) from error
        if not jobs:
            return []
        folder = Path(jobs[0].out) / "jobs" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.config.cluster)
        executor.update_parameters(name="iris-wm-scaling", **self.config.parameters)
        running = {}
        for i, job in enumerate(jobs, 1):
            announce(i, job)
            submitted = executor.submit(job)
            self.log(
                f"  submitted as job {submitted.job_id} ({executor.cluster}); its folder: {submitted.paths.folder}"
            )
            running[submitted] = job
        failures = []
        while running:
            for submitted in [s for s in running if s.done()]:
                job = running.pop(submitted)
                try:
                    lines = submitted.result()
                except Exception as error:  # noqa: BLE001 - submitit re-raises the job's error here
                    failures.append(Failure(_label(job), _job_error(str(error)), str(submitted.paths.stderr)))
                    continue
                done(job, lines)
            if running:
                time.sleep(self.config.poll_seconds)
        return failures


def _job_error(text: str) -> str:
    """The exception line of a failed job's traceback (submitit's message holds the whole traceback)."""
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b(:.*)?$")
    found = [line.strip() for line in text.splitlines() if pattern.match(line.strip())]
    return found[-1] if found else (text.strip().splitlines() or ["the job failed"])[0]
