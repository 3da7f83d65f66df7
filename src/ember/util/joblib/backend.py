"""The joblib backend behind :func:`ember.util.joblib.register_ray` (imports joblib)."""
from __future__ import annotations

# joblib exports no public base for a custom backend; Ray's backend subclasses this
# private one too.
from joblib._parallel_backends import MultiprocessingBackend

from ... import worker
from ..multiprocessing import Pool


def _cluster_cpus() -> int:
    if not worker.is_initialized():
        worker.init()
    return int(worker.cluster_resources().get("CPU", 1))


class EmberBackend(MultiprocessingBackend):
    """joblib's multiprocessing backend with a pool of the cluster's processes.

    ``n_jobs=-1`` means every CPU of the cluster (not of this machine), ``-2``
    all but one, and so on, as joblib counts.
    """

    def __init__(self, *args, ray_remote_args: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._remote_args = ray_remote_args

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        cpus = _cluster_cpus()
        if n_jobs < 0:
            return max(cpus + 1 + n_jobs, 1)
        return min(n_jobs, cpus)

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        self._pool = Pool(processes=n_jobs, ray_remote_args=self._remote_args)
        return n_jobs

    def terminate(self):
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
