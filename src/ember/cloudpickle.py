"""``ray.cloudpickle``: the cloudpickle ember pickles functions with, importable as a
module (``from ember.cloudpickle import dumps``) as Ray's vendored one is."""
from cloudpickle import *  # noqa: F401,F403
from cloudpickle import (CloudPickler, Pickler, dump, dumps, load, loads,  # noqa: F401
                         register_pickle_by_value, unregister_pickle_by_value)
