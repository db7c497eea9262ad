"""Local message sinks for benchmarks: Postfix's smtp-sink for email and a minimal
Twilio-compatible HTTP endpoint for SMS (run as its own process: `python -m bench.sinks PORT`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scripts.localredis import free_port


class TwilioSink(BaseHTTPRequestHandler):
    """Answers every Messages POST with 201 and a fresh sid; keeps connections alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: with Nagle on, the second waits for a delayed
    # ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"sid": "SM" + uuid.uuid4().hex, "status": "queued"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def start_smtp_sink() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not shutil.which(binary):
        sys.exit("smtp-sink not found: install Postfix (apt-get install postfix), which ships it")
    port = free_port()
    # As root it must drop privileges to a user; Postfix's package creates "postfix".
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [binary, *user, "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for(port, proc)
    return proc, port


def start_twilio_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.sinks", str(port)])
    _wait_for(port, proc)
    return proc, port


def _wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            sys.exit(f"sink exited at start: {err}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"sink did not listen on {port}")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), TwilioSink).serve_forever()
