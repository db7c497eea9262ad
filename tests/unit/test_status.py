"""The campaign status machine (`server.core.status`), against the README's own statement of it:
`draft → scheduled → calculating → sending → sent | failed`, and `cancelled` from draft,
scheduled, calculating or sending. The table below is written out by hand on purpose: a change
to the machine has to change it too."""

from __future__ import annotations

import pytest

from server.core.status import ACTIVE, FINAL, TRANSITIONS, Action, Status, allowed_from, is_final
from server.core.status import next_status as move

D, SC, CA, SE, ST, FA, CX = (
    Status.DRAFT,
    Status.SCHEDULED,
    Status.CALCULATING,
    Status.SENDING,
    Status.SENT,
    Status.FAILED,
    Status.CANCELLED,
)

# action -> {from: to}; any status not listed refuses the action.
EXPECTED: dict[Action, dict[Status, Status]] = {
    Action.SCHEDULE: {D: SC, SC: SC},  # a scheduled campaign may be rescheduled
    Action.SEND_NOW: {D: CA, SC: CA},
    Action.KICK_OFF: {SC: CA},
    Action.START_SENDING: {CA: SE},
    Action.FINISH: {CA: ST, SE: ST},  # nobody to send to: straight from calculating
    Action.FAIL: {CA: FA, SE: FA},
    Action.CANCEL: {D: CX, SC: CX, CA: CX, SE: CX},
    Action.EDIT: {D: D, SC: SC},
    Action.DELETE: {D: D, SC: SC, ST: ST, FA: FA, CX: CX},
}


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("current", list(Status))
def test_every_status_and_action_leads_where_the_readme_says(current, action):
    assert move(current, action) == EXPECTED[action].get(current)


@pytest.mark.parametrize("action", list(Action))
def test_allowed_from_is_exactly_the_statuses_with_a_move(action):
    assert allowed_from(action) == frozenset(EXPECTED[action])
    assert allowed_from(action) == {s for s in Status if move(s, action) is not None}


def test_every_action_has_a_row_and_every_target_is_a_status():
    assert set(TRANSITIONS) == set(Action)
    assert all(isinstance(to, Status) for row in TRANSITIONS.values() for to in row.values())


def test_the_happy_path_reaches_sent():
    status = D
    for action in (Action.SCHEDULE, Action.KICK_OFF, Action.START_SENDING, Action.FINISH):
        after = move(status, action)
        assert after is not None, (status, action)
        status = after
    assert status == ST


def test_final_statuses_are_left_by_no_action_but_delete_which_keeps_them():
    assert {ST, FA, CX} == FINAL
    for status in FINAL:
        assert is_final(status)
        moves = {a: move(status, a) for a in Action if move(status, a) is not None}
        assert moves == {Action.DELETE: status}, (status, moves)
    assert not any(is_final(s) for s in set(Status) - FINAL)


def test_a_campaign_in_progress_can_be_neither_edited_nor_deleted_nor_started_again():
    assert {CA, SE} == ACTIVE
    for status in ACTIVE:
        for action in (Action.EDIT, Action.DELETE, Action.SEND_NOW, Action.SCHEDULE):
            assert move(status, action) is None, (status, action)


def test_edit_never_moves_a_campaign():
    assert all(move(s, Action.EDIT) in (None, s) for s in Status)


def test_statuses_and_actions_are_their_wire_strings():
    assert [s.value for s in Status] == [
        "draft",
        "scheduled",
        "calculating",
        "sending",
        "sent",
        "failed",
        "cancelled",
    ]
    assert Status("sending") is SE and Action("send_now") is Action.SEND_NOW
