"""FAKE fleet manager for the agent tests: the MQTT side of the manager, nothing else.

Real broker, real TUF repository (:mod:`.tufrepo`), real keys. It publishes the repository's
metadata retained on ``tuf/metadata/<file>``, answers ``fetch`` requests with chunk frames, signs
commands with the manager key, and records every ``state``/``telemetry``/``status`` it sees.
Knobs make it misbehave for the bad-input tests (drop chunks, corrupt them, oversize them).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from securesystemslib.signer import Signer

from edgeops.protocol import Ack, Chunk, Command, FetchRequest, SignedCommand, encode_chunk, topics
from edgeops.protocol.messages import decode_json
from tests.tuf_repo import TufRepo

__all__ = ["FakeManager"]


class FakeManager:
    def __init__(self, port: int, repo: TufRepo, manager_signer: Signer,
                 chunk_bytes: int = 4096) -> None:
        self.repo = repo
        self.signer = manager_signer
        self.chunk_bytes = chunk_bytes
        self.fetches: list[FetchRequest] = []
        self.states: list[dict[str, Any]] = []
        self.telemetry: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.seq: dict[str, int] = {}
        # misbehaviour knobs
        self.skip_first: set[int] = set()         # indices left out of the first answer only
        self.corrupt: Callable[[int, bytes], bytes] | None = None   # frame rewriter
        self.answer = True
        self.acks = True                          # end-to-end acks on devices/<id>/ack
        self.served = 0                           # fetch requests fully answered (or ignored)
        self._cond = threading.Condition()
        self._work: queue.Queue[FetchRequest | None] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fake-manager",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe([(f"{topics.PREFIX}/devices/+/{c}", 1)
                               for c in ("fetch", "state", "telemetry", "status")])
        assert done.wait(5)
        self._worker = threading.Thread(target=self._serve, daemon=True)
        self._worker.start()

    # -- TUF over MQTT -------------------------------------------------------------------
    def publish_metadata(self) -> None:
        for name, data in sorted(self.repo.metadata.items()):
            self.client.publish(topics.tuf_metadata(name), data, qos=1,
                                retain=True).wait_for_publish(5)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        dt = topics.parse_device_topic(msg.topic)
        if dt is None or not msg.payload:
            return
        if dt.channel == "fetch":
            req = decode_json(bytes(msg.payload), expect=FetchRequest)
            self._ack(Ack(dt.device_id, fetch=(req.artifact,)))
            self._work.put(req)
            return
        d = json.loads(msg.payload)
        if dt.channel in ("state", "telemetry"):
            self._ack(Ack(dt.device_id, **{dt.channel: int(d["seq"])}))
        with self._cond:
            {"state": self.states, "telemetry": self.telemetry,
             "status": self.statuses}[dt.channel].append(d)
            self._cond.notify_all()

    def _ack(self, ack: Ack) -> None:
        if self.acks:
            self.client.publish(topics.device_topic(ack.device_id, "ack"), ack.to_bytes(), qos=0)

    def _serve(self) -> None:
        while (req := self._work.get()) is not None:
            with self._cond:
                self.fetches.append(req)
                first = len([f for f in self.fetches if f.artifact == req.artifact]) == 1
                self._cond.notify_all()
            try:
                self._answer(req, first)
            finally:
                with self._cond:
                    self.served += 1
                    self._cond.notify_all()

    def _answer(self, req: FetchRequest, first: bool) -> None:
        data = self.repo.by_sha.get(req.artifact)
        if data is None or not self.answer:
            return
        count = max(1, -(-len(data) // self.chunk_bytes))
        wanted = (range(count) if req.missing is None
                  else [i for a, b in req.missing for i in range(a, min(b, count))])
        for i in wanted:
            if first and i in self.skip_first:
                continue
            piece = data[i * self.chunk_bytes:(i + 1) * self.chunk_bytes]
            frame = encode_chunk(Chunk(req.artifact, i, count, len(data), piece))
            if self.corrupt is not None:
                frame = self.corrupt(i, frame)
            self.client.publish(topics.artifact_chunks(req.artifact), frame, qos=1)

    # -- commands --------------------------------------------------------------------------
    def command(self, device_id: str, kind: str, body: dict[str, Any], *,
                expires_in_s: float = 600, seq: int | None = None,
                signer: Signer | None = None, to: str | None = None,
                channel: str = "commands") -> SignedCommand:
        if seq is None:
            seq = self.seq.get(device_id, 0) + 1
        self.seq[device_id] = max(seq, self.seq.get(device_id, 0))
        now = time.time()
        cmd = Command(device_id=to or device_id, seq=seq, kind=kind, issued=now,
                      expires=now + expires_in_s, body=body)
        signed = SignedCommand.sign(cmd, signer or self.signer)
        self.send_raw(device_id, signed.to_bytes(), channel=channel)
        return signed

    def send_raw(self, device_id: str, payload: bytes, channel: str = "commands") -> None:
        self.client.publish(topics.device_topic(device_id, channel), payload, qos=1,
                            retain=channel == "desired").wait_for_publish(5)

    # -- observing -------------------------------------------------------------------------
    def wait(self, pred: Callable[[], Any], timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (got := pred()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out; states={[(s['phase'], s['reason']) for s in self.states]}")
                self._cond.wait(min(left, 0.2))
            return got

    def phases(self) -> list[str | None]:
        return [s["phase"] for s in self.states]

    def close(self) -> None:
        self._work.put(None)
        self.client.disconnect()
        self.client.loop_stop()
