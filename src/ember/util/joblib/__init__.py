"""joblib on the cluster: ``register_ray()``, then ``with joblib.parallel_backend("ray"):``.

scikit-learn and other joblib users then run their parallel loops on the
cluster's CPUs instead of this machine's. Each joblib batch runs in a process
of an :class:`ember.util.multiprocessing.Pool` (actors sized by the cluster),
so joblib's own batching, callbacks and error handling work unchanged.
joblib is not a dependency of ember: install it to use this.
"""
from __future__ import annotations

__all__ = ["register_ray"]


def register_ray() -> None:
    """Register the ``"ray"`` joblib backend (also reachable as ``"ember"``)."""
    try:
        from joblib.parallel import register_parallel_backend
    except ImportError:
        raise ImportError("register_ray() needs joblib: pip install joblib") from None
    from .backend import EmberBackend
    register_parallel_backend("ray", EmberBackend)
    register_parallel_backend("ember", EmberBackend)
