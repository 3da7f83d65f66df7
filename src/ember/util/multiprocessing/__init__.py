"""``multiprocessing.Pool`` on the cluster: ``from ember.util.multiprocessing import Pool``."""
from multiprocessing import JoinableQueue, TimeoutError  # noqa: A004 - as Ray exports them

from .pool import AsyncResult, IMapIterator, Pool

__all__ = ["Pool", "AsyncResult", "IMapIterator", "TimeoutError", "JoinableQueue"]
