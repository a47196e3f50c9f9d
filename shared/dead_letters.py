"""Dead letters: what `lorafleet.v1.dlq.<service>` carries when a message can't be handled."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict

from lorafleet.shared.events import Event

# A dead letter carries at most this much of the original (the full message stays in the stream).
DLQ_ORIGINAL_MAX = 256 * 1024


class DeadLetter(BaseModel):
    """What `lorafleet.v1.dlq.<service>` carries: why, and the original message."""

    model_config = ConfigDict(extra="allow")
    service: str
    reason: str  # invalid | max_deliver | no_handler
    error: str
    subject: str
    stream_seq: int | None = None
    num_delivered: int | None = None
    event_id: str | None = None
    request_id: str | None = None
    original: str
    original_encoding: str = "utf-8"  # or base64
    original_truncated: bool = False
    dead_lettered_at: datetime

    def original_bytes(self) -> bytes:
        return base64.b64decode(self.original) if self.original_encoding == "base64" else self.original.encode()


def make_dead_letter(service: str, msg: Msg, reason: str, error: str, event: Event | None = None) -> DeadLetter:
    data = msg.data or b""
    truncated = len(data) > DLQ_ORIGINAL_MAX
    data = data[:DLQ_ORIGINAL_MAX]
    try:
        original, encoding = data.decode(), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(data).decode(), "base64"
    meta = message_metadata(msg)
    return DeadLetter(
        service=service, reason=reason, error=error[-8000:], subject=msg.subject,
        stream_seq=meta.sequence.stream if meta else None,
        num_delivered=meta.num_delivered if meta else None,
        event_id=event.event_id if event else None, request_id=event.request_id if event else None,
        original=original, original_encoding=encoding, original_truncated=truncated,
        dead_lettered_at=datetime.now(timezone.utc),
    )


def message_metadata(msg: Msg) -> Msg.Metadata | None:
    try:
        return msg.metadata
    except Exception:  # not a JetStream message (tests publishing on core NATS)
        return None


async def replay(js, seq: int, timeout: float = 5.0) -> tuple[DeadLetter, int]:
    """Publish the original message of the dead letter at stream sequence `seq` again, on its own subject,
    so the consumer that gave up on it gets it once more (`lorafleet events replay`, the dashboard).

    Nats-Msg-Id `replay/<seq>`: replaying the same dead letter twice within the dedup window is recorded once.
    Returns the dead letter and the new message's stream sequence.
    """
    from nats.js.errors import NotFoundError

    from lorafleet.shared.errors import LorafleetError
    from lorafleet.shared.events import DLQ_PREFIX, STREAM, SUBJECT_PREFIX

    try:
        msg = await js.get_msg(STREAM, seq)
    except NotFoundError:
        raise LorafleetError(f"no message at stream sequence {seq}: list dead letters with "
                             "`lorafleet events tail --json` (subjects lorafleet.v1.dlq.*)") from None
    if not msg.subject.startswith(DLQ_PREFIX + "."):
        raise LorafleetError(f"stream sequence {seq} is a {msg.subject} message, not a dead letter ({DLQ_PREFIX}.<service>)")
    letter = DeadLetter.model_validate_json(msg.data)
    if letter.original_truncated:
        raise LorafleetError(f"dead letter {seq} holds a truncated copy; replay the original at stream sequence "
                             f"{letter.stream_seq} instead")
    if not letter.subject.startswith(SUBJECT_PREFIX + ".") or letter.subject.startswith(DLQ_PREFIX + "."):
        raise LorafleetError(f"dead letter {seq} came from {letter.subject!r}, which no service consumes")
    ack = await js.publish(letter.subject, letter.original_bytes(), stream=STREAM, timeout=timeout,
                           headers={"Nats-Msg-Id": f"replay/{seq}"})
    return letter, ack.seq
