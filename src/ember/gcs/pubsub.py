"""The GCS publisher: fan-out of cluster events to subscribed connections.

Subscribers are connections that sent ``Subscribe``; a published message is sent
to each as a notification. Per-job channels (logs, errors) are filtered by the
job id the subscriber gave, so a driver sees its own job's prints only.
A subscriber that disconnects is dropped; there is no replay, because every
subscriber also reads the current state (GetAllNodes) when it starts.
"""
from __future__ import annotations

import logging

from ..protocol import gcs as msg

logger = logging.getLogger(__name__)


class Publisher:
    def __init__(self):
        # channel -> {connection: job filter}
        self._subscribers: dict[str, dict[object, bytes]] = {}

    def handlers(self):
        return {msg.Subscribe: self.subscribe}

    def subscribe(self, conn, req: msg.Subscribe) -> msg.SubscribeReply:
        for channel in req.channels:
            self._subscribers.setdefault(channel, {})[conn] = req.job_id
        return msg.SubscribeReply()

    def drop(self, conn) -> None:
        for subs in self._subscribers.values():
            subs.pop(conn, None)

    def publish(self, channel: str, message, job_id: bytes = b"") -> None:
        for conn, wanted in list(self._subscribers.get(channel, {}).items()):
            if wanted and job_id and wanted != job_id:
                continue
            try:
                conn.notify(message)
            except ConnectionError:
                self.drop(conn)

    def debug_state(self) -> dict:
        return {ch: len(subs) for ch, subs in self._subscribers.items()}
