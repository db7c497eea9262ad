"""Users (recipients): reads, listing and erasure. Importing them is `server.audience.imports`."""

from __future__ import annotations

from dataclasses import dataclass

from server.core.errors import NotFound
from server.core.validation import Violations
from server.security import tenancy
from server.store.db import tuples, write_transaction
from server.store.models import Delivery, User, UserEdition, utcnow
from server.store.pagination import Page, PageRequest, paginate


def get_user(user_id: int) -> User:
    user = User.get_or_none((User.id == user_id) & User.erased_at.is_null())
    if user is None:
        raise NotFound("user", user_id)
    tenancy.check_owner(user.organization_id, "user", user_id)
    return user


def edition_ids(user_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {u: [] for u in user_ids}
    query = (
        UserEdition.select(UserEdition.user, UserEdition.edition)
        .where(UserEdition.user.in_(user_ids))
        .order_by(UserEdition.edition)
    )
    for user_id, edition_id in tuples(query):
        out[user_id].append(edition_id)
    return out


@dataclass(frozen=True)
class UserFilter:
    organization_id: int = 0
    edition_id: int = 0
    email_consent: bool | None = None
    sms_consent: bool | None = None


def list_users(flt: UserFilter, page: PageRequest) -> Page[User]:
    v = Violations()
    v.positive_id(flt.organization_id, "organization_id")
    v.positive_id(flt.edition_id, "edition_id", required=False)
    number, size = page.resolved(v)
    v.raise_if_any()
    query = tenancy.scoped(User.select(), User.organization_id).where(
        (User.organization_id == flt.organization_id) & User.erased_at.is_null()
    )
    if flt.edition_id:
        members = UserEdition.select(UserEdition.user).where(UserEdition.edition == flt.edition_id)
        query = query.where(User.id.in_(members))
    if flt.email_consent is not None:
        query = query.where(User.email_consent == flt.email_consent)
    if flt.sms_consent is not None:
        query = query.where(User.sms_consent == flt.sms_consent)
    return paginate(query.order_by(User.id), number, size)


def delete_user(user_id: int) -> None:
    """Erase: personal data goes, the row stays so past deliveries still count."""
    with write_transaction():
        user = get_user(user_id)
        UserEdition.delete().where(UserEdition.user == user.id).execute()
        User.update(
            external_id=f"erased-{user.id}",
            email="",
            phone="",
            first_name="",
            last_name="",
            language="",
            attributes={},
            email_consent=False,
            sms_consent=False,
            erased_at=utcnow(),
            modified=utcnow(),
        ).where(User.id == user.id).execute()
        # The ledger keeps each past delivery's status (the counts) but not the address.
        Delivery.update(address="").where(Delivery.user_id == user.id).execute()
