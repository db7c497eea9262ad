"""The campaign status machine: pure, shared by the server and the jobs.

It only answers "from this status, may this action happen, and where does it lead?".
Callers apply the answer with a compare-and-set on the row (see `server.campaigns.transitions`),
so a worker and a caller racing on the same campaign can never both win.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    CALCULATING = "calculating"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Action(StrEnum):
    SCHEDULE = "schedule"
    SEND_NOW = "send_now"
    KICK_OFF = "kick_off"  # a scheduled campaign's time has come
    START_SENDING = "start_sending"
    FINISH = "finish"
    FAIL = "fail"
    CANCEL = "cancel"
    EDIT = "edit"  # not a move: the campaign stays where it is
    DELETE = "delete"


S = Status
FINAL: frozenset[Status] = frozenset({S.SENT, S.FAILED, S.CANCELLED})
ACTIVE: frozenset[Status] = frozenset({S.CALCULATING, S.SENDING})

# action -> {from status: to status}
TRANSITIONS: dict[Action, dict[Status, Status]] = {
    Action.SCHEDULE: {S.DRAFT: S.SCHEDULED, S.SCHEDULED: S.SCHEDULED},
    Action.SEND_NOW: {S.DRAFT: S.CALCULATING, S.SCHEDULED: S.CALCULATING},
    Action.KICK_OFF: {S.SCHEDULED: S.CALCULATING},
    # A calculation that finds nobody to send to finishes straight from calculating.
    Action.START_SENDING: {S.CALCULATING: S.SENDING},
    Action.FINISH: {S.CALCULATING: S.SENT, S.SENDING: S.SENT},
    Action.FAIL: {S.CALCULATING: S.FAILED, S.SENDING: S.FAILED},
    Action.CANCEL: {s: S.CANCELLED for s in (S.DRAFT, S.SCHEDULED, S.CALCULATING, S.SENDING)},
    Action.EDIT: {S.DRAFT: S.DRAFT, S.SCHEDULED: S.SCHEDULED},
    Action.DELETE: {s: s for s in Status if s not in ACTIVE},
}


def allowed_from(action: Action) -> frozenset[Status]:
    """The statuses `action` may start from."""
    return frozenset(TRANSITIONS[action])


def next_status(current: Status, action: Action) -> Status | None:
    """Where `action` takes a campaign in `current`, or None when it is not allowed."""
    return TRANSITIONS[action].get(current)


def is_final(status: Status) -> bool:
    return status in FINAL
