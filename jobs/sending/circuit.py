"""A circuit breaker per provider endpoint, shared by every worker through Redis.

Several workers send the same campaign through the same SMTP relay or API account, so the
breaker's state lives in one Redis hash per endpoint, and every transition is one Lua script
(atomic: two workers can never both take the half-open probe, nor lose a count).

- closed: sends go through. `circuit_failures` consecutive provider faults (refused or
  dropped connections, timeouts, SMTP 421, HTTP 429/5xx; see `SendResult.fault`) open it. A
  per-recipient refusal (550, HTTP 400, greylisting) proves the provider is answering and
  counts as health, never as a fault.
- open (for `circuit_open_seconds`, or longer when the provider asked so with Retry-After):
  send jobs claim nothing, give back rows not yet sent without spending an attempt, and come
  back when it may let a probe through.
- half-open: exactly one job (the "prober", under a lease of `circuit_probe_seconds`) sends
  one message. Any answer from the provider closes the circuit; a fault opens it again.

Why not a library: pybreaker (the maintained one on PyPI) wraps calls and judges exceptions,
while we judge results and must not count per-recipient refusals; its Redis storage reads
and writes the state in separate commands, so racing workers can all pass half-open at once;
and nothing there knows how to pause a job. The four scripts below are the whole breaker.
If Redis errs, the breaker fails open (sends go on): delivery must not stop because of it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from jobs.sending.providers import Outcome, SendResult
from server.config import DeliverySettings

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN, PROBE = "closed", "open", "half_open", "probe"
_TTL = 86400  # a breaker nobody touched for a day is forgotten (it reads as closed)
# While another job probes, look again this soon rather than after its whole lease: a probe
# usually answers in milliseconds, and then every job should be sending again.
_HALF_OPEN_RECHECK = 1.0

# KEYS[1] is always the breaker's hash; TTL: the seconds it lives on after a write (_TTL).
# ARGV: now, owner, probe lease seconds, may probe (1/0), TTL
# -> state, seconds to wait, failures, granted (1: this call made `owner` the prober)
_CHECK = """
local s = redis.call('HMGET', KEYS[1], 'state', 'until', 'failures', 'prober')
local state, failures = s[1] or 'closed', tonumber(s[3] or '0')
local now, left = tonumber(ARGV[1]), tonumber(s[2] or '0') - tonumber(ARGV[1])
if state == 'closed' then return {'closed', '0', failures, 0} end
if state == 'half_open' and s[4] == ARGV[2] then return {'probe', tostring(left), failures, 0} end
if left > 0 then return {state, tostring(left), failures, 0} end
if ARGV[4] ~= '1' then return {state, '0', failures, 0} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'prober', ARGV[2],
           'until', tostring(now + tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'probe', ARGV[3], failures, 1}
"""

# ARGV: now, threshold, open seconds, TTL -> prior state, new state, failures, seconds open
_FAULT = """
local s = redis.call('HMGET', KEYS[1], 'state', 'failures', 'until')
local state, failures = s[1] or 'closed', tonumber(s[2] or '0') + 1
local now, untl = tonumber(ARGV[1]), tonumber(s[3] or '0')
local new = state
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  new, untl = 'open', now + tonumber(ARGV[3])
end
redis.call('HSET', KEYS[1], 'state', new, 'failures', failures, 'until', tostring(untl))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {state, new, failures, tostring(untl - now)}
"""

# ARGV: TTL -> prior state, failures before
_HEALTHY = """
local s = redis.call('HMGET', KEYS[1], 'state', 'failures')
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'until', '0', 'prober', '')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {s[1] or 'closed', tonumber(s[2] or '0')}
"""

# ARGV: owner -> nothing. The prober found nothing to send: let the next job probe at once.
_RELEASE = """
local s = redis.call('HMGET', KEYS[1], 'state', 'prober')
if s[1] == 'half_open' and s[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'until', '0', 'prober', '')
end
return {}
"""


def key_for(circuit: str) -> str:
    return f"campaigns:circuit:{circuit}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Gate:
    """What `check` found: may this job send, and if not, for how long to stay away."""

    state: str
    wait: float = 0.0
    failures: int = 0

    @property
    def allowed(self) -> bool:
        return self.state in (CLOSED, PROBE)

    @property
    def probing(self) -> bool:
        return self.state == PROBE


class Circuit:
    """One send job's handle on the shared breaker of its provider endpoint."""

    def __init__(self, redis: Redis | None, name: str, settings: DeliverySettings, owner: str):
        self.name = name
        self.key = key_for(name)
        self.settings = settings
        self.owner = owner
        self.tripped = threading.Event()  # this job saw it open: no more network calls
        self.resume_at = 0.0
        # Faults may be on record: the next success must reset them (else: no round trip).
        self.suspect = False
        self.redis = redis

    def _run(self, script: str, *args: str | float) -> list[Any] | None:
        if self.redis is None:
            return None
        try:
            return list(self.redis.eval(script, 1, self.key, *args))
        except RedisError as exc:
            log.warning("circuit breaker unreachable", extra={"circuit": self.name, "error": exc})
            return None

    def wait(self) -> float:
        return max(0.0, self.resume_at - time.time())

    def check(self, may_probe: bool = True) -> Gate:
        """May this job send? Open past its interval: the first to ask (if `may_probe`)
        becomes the prober."""
        if self.tripped.is_set():
            return Gate(OPEN, self.wait())
        probe = self.settings.circuit_probe_seconds
        reply = self._run(_CHECK, time.time(), self.owner, probe, int(may_probe), _TTL)
        if reply is None:
            return Gate(CLOSED)
        state, wait = _text(reply[0]), max(0.0, float(_text(reply[1])))
        if state == HALF_OPEN:
            wait = min(wait, _HALF_OPEN_RECHECK)
        gate = Gate(state, wait, int(reply[2]))
        self.suspect = self.suspect or gate.failures > 0 or gate.state != CLOSED
        if reply[3]:
            log.info(
                "circuit half-open: probing",
                extra={"circuit": self.name, "owner": self.owner, "failures": gate.failures},
            )
        return gate

    def observe(self, result: SendResult) -> SendResult:
        """Feed one send's result in (called on the I/O threads); returns it, with a later
        retry when the circuit is open: such a row sits out the next probe, so probes go
        round the rows instead of spending one row's attempts."""
        if result.outcome == Outcome.DEFERRED:
            return result
        if not result.fault:
            if self.suspect:
                self._healthy()
            return result
        self._fault(result.retry_after)
        if not self.tripped.is_set():
            return result
        wait = self.wait() + self.settings.circuit_open_seconds
        return replace(result, retry_after=max(result.retry_after, wait))

    def _fault(self, retry_after: float) -> None:
        s = self.settings
        open_for = max(s.circuit_open_seconds, min(retry_after, s.retry_max_seconds))
        self.suspect = True
        reply = self._run(_FAULT, time.time(), s.circuit_failures, open_for, _TTL)
        if reply is None:
            return
        prior, new, failures = _text(reply[0]), _text(reply[1]), int(reply[2])
        if new != OPEN:
            return
        self.resume_at = time.time() + float(_text(reply[3]))
        self.tripped.set()
        if prior != OPEN:
            log.warning(
                "circuit opened",
                extra={
                    "circuit": self.name,
                    "failures": failures,
                    "open_seconds": open_for,
                    "after_probe": prior == HALF_OPEN,
                },
            )

    def _healthy(self) -> None:
        reply = self._run(_HEALTHY, _TTL)
        self.suspect = False
        if reply is not None and _text(reply[0]) != CLOSED:
            log.info("circuit closed", extra={"circuit": self.name, "failures": int(reply[1])})

    def release_probe(self) -> None:
        self._run(_RELEASE, self.owner)
        log.info("circuit probe released: nothing due", extra={"circuit": self.name})
