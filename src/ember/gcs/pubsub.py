"""The GCS publisher: fan-out of cluster events to subscribed connections.

Subscribers are connections that sent ``Subscribe``; a published message is sent
to each as a notification. Two kinds of filter:

- per-job channels (logs, errors) are filtered by the job id the subscriber
  gave, so a driver sees its own job's prints only;
- keyed channels (actor) deliver a message only to subscribers of its key, so
  a caller hears about the actors it holds handles to, not every actor.

A subscriber that disconnects is dropped. There is no replay: a subscriber
reads the current state (GetAllNodes, GetActorInfo) after subscribing.
"""
from __future__ import annotations

import logging

from ..protocol import gcs as msg
from ..rpc.connection import encode_notification

logger = logging.getLogger(__name__)


class Publisher:
    def __init__(self):
        # channel -> {connection: job filter}; for unkeyed subscriptions
        self._subscribers: dict[str, dict[object, bytes]] = {}
        # channel -> key -> set of connections
        self._keyed: dict[str, dict[bytes, set]] = {}

    def handlers(self):
        return {msg.Subscribe: self.subscribe, msg.Unsubscribe: self.unsubscribe}

    def subscribe(self, conn, req: msg.Subscribe) -> msg.SubscribeReply:
        for channel in req.channels:
            if req.keys:
                keyed = self._keyed.setdefault(channel, {})
                for key in req.keys:
                    keyed.setdefault(key, set()).add(conn)
            else:
                self._subscribers.setdefault(channel, {})[conn] = req.job_id
        return msg.SubscribeReply()

    def unsubscribe(self, conn, req: msg.Unsubscribe) -> None:
        keyed = self._keyed.get(req.channel, {})
        for key in req.keys:
            conns = keyed.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del keyed[key]

    def drop(self, conn) -> None:
        for subs in self._subscribers.values():
            subs.pop(conn, None)
        for keyed in self._keyed.values():
            for key in [k for k, conns in keyed.items() if conn in conns]:
                keyed[key].discard(conn)
                if not keyed[key]:
                    del keyed[key]

    def publish(self, channel: str, message, job_id: bytes = b"", key: bytes = b"") -> None:
        targets = []
        for conn, wanted in self._subscribers.get(channel, {}).items():
            if not (wanted and job_id and wanted != job_id):
                targets.append(conn)
        if key:
            targets.extend(self._keyed.get(channel, {}).get(key, ()))
        if not targets:
            return
        # Encoded once for all (see encode_notification): a broadcast to every
        # raylet of what every raylet reported would cost nodes x nodes encodes.
        frame = encode_notification(message)
        for conn in targets:
            try:
                conn.notify_frame(frame)
            except ConnectionError:
                self.drop(conn)

    def debug_state(self) -> dict:
        state = {ch: len(subs) for ch, subs in self._subscribers.items()}
        for ch, keyed in self._keyed.items():
            state[f"{ch} (keyed)"] = len(keyed)
        return state
