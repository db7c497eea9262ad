"""Apply status-machine moves to campaign rows with compare-and-set, never read-modify-write."""

from __future__ import annotations

from typing import Any

from server.core.errors import Aborted, InvalidTransition, NotFound
from server.core.status import Action, Status, next_status
from server.security import tenancy
from server.store.db import CachedSelect
from server.store.models import Campaign, Edition, utcnow

# A lost compare-and-set is re-read and retried this many times before giving up.
_CAS_ATTEMPTS = 5


# Its SQL built once (`CachedSelect`): it runs on most campaign RPCs and every send job.
_BY_ID = CachedSelect(
    lambda campaign_id: (
        Campaign.select(Campaign, Edition).join(Edition).where(Campaign.id == campaign_id).limit(1)
    )
)


def get(campaign_id: int) -> Campaign:
    """The campaign, as a model with its edition (for the timezone): what the commands, the
    stats and the jobs work on. NotFound also when the caller may not see its organization."""
    campaign: Campaign | None = next(iter(_BY_ID.rows(campaign_id)), None)
    if campaign is None:
        raise NotFound("campaign", campaign_id)
    tenancy.check_owner(campaign.organization_id, "campaign", campaign_id)
    return campaign


def compare_and_set(campaign_id: int, expected: Status, target: Status, **changes: Any) -> bool:
    """Set status `target` (and `changes`) only if the row still has status `expected`."""
    updated = (
        Campaign.update(status=target, version=Campaign.version + 1, modified=utcnow(), **changes)
        .where((Campaign.id == campaign_id) & (Campaign.status == expected))
        .execute()
    )
    return updated == 1


def apply(campaign_id: int, action: Action, **changes: Any) -> Campaign:
    """Move the campaign by `action`; InvalidTransition when its status forbids it."""
    for _ in range(_CAS_ATTEMPTS):
        current = Status(get(campaign_id).status)
        target = next_status(current, action)
        if target is None:
            raise InvalidTransition(campaign_id, current, action)
        if compare_and_set(campaign_id, current, target, **changes):
            return get(campaign_id)
    raise Aborted(f"campaign {campaign_id} kept changing; try again", reason="CONCURRENT_CHANGE")


def try_apply(campaign_id: int, action: Action, **changes: Any) -> bool:
    """For jobs: like `apply`, but a forbidden or lost move is a quiet False."""
    campaign = Campaign.get_or_none(Campaign.id == campaign_id)
    if campaign is None:
        return False
    current = Status(campaign.status)
    target = next_status(current, action)
    return target is not None and compare_and_set(campaign_id, current, target, **changes)


def require(campaign: Campaign, action: Action) -> None:
    """Raise InvalidTransition unless `action` is allowed from the campaign's status."""
    if next_status(Status(campaign.status), action) is None:
        raise InvalidTransition(campaign.id, campaign.status, action)


def compare_and_set_version(campaign: Campaign, **changes: Any) -> bool:
    """Write `changes` only if nobody changed the row since `campaign` was read."""
    updated = (
        Campaign.update(version=Campaign.version + 1, modified=utcnow(), **changes)
        .where((Campaign.id == campaign.id) & (Campaign.version == campaign.version))
        .execute()
    )
    return updated == 1
