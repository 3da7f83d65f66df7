"""Every message ember sends, grouped by service, plus the envelope and framing.

Modules: :mod:`.common` (shared value types), :mod:`.gcs`, :mod:`.raylet`,
:mod:`.core_worker`, :mod:`.object_store`, :mod:`.task_events`, :mod:`.metrics`, and :mod:`.framing` (how envelopes
become bytes).
"""
from . import common, core_worker, gcs, metrics, object_store, raylet, task_events  # noqa: F401
from .common import Message


def _all_messages():
    seen = []
    stack = [Message]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            seen.append(sub)
            stack.append(sub)
    return tuple(seen)


#: Every concrete message type; the decoder accepts any of them.
ALL_MESSAGES = _all_messages()
