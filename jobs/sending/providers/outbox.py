"""The embedded default provider: messages become files under the outbox directory.

Email: one `.eml` file per message, named by its Message-ID, under `email/`.
SMS: one JSON line per message appended to `sms.jsonl`. A new user sees real output with no
account anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from jobs.sending.providers import OutgoingEmail, OutgoingSms, SendResult, sent
from server.core.clock import utcnow


class OutboxProvider:
    name = "outbox"

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.endpoint = str(self.directory)
        (self.directory / "email").mkdir(parents=True, exist_ok=True)

    def send_email(self, message: OutgoingEmail) -> SendResult:
        name = hashlib.sha1(message.message_id.encode()).hexdigest()[:20] + ".eml"
        path = self.directory / "email" / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(message.data)
        os.replace(tmp, path)  # a reader never sees half a message
        return sent(message.message_id)

    def send_sms(self, message: OutgoingSms) -> SendResult:
        line = json.dumps(
            {
                "to": message.to,
                "body": message.body,
                "id": message.reference,
                "at": utcnow().isoformat() + "Z",
            },
            ensure_ascii=False,
        )
        with open(self.directory / "sms.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        return sent(message.reference)

    def close(self) -> None:
        pass
