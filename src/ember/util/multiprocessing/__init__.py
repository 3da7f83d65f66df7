"""``multiprocessing.Pool`` on the cluster: ``from ember.util.multiprocessing import Pool``."""
from multiprocessing import TimeoutError  # noqa: A004 - what a Pool's get() raises

from .pool import AsyncResult, IMapIterator, Pool

__all__ = ["Pool", "AsyncResult", "IMapIterator", "TimeoutError"]
