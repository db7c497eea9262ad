"""AudienceService users over a real channel: ImportUsers (a client stream of batches) upserts
by external_id and rejects bad rows one by one; GetUser/ListUsers read; DeleteUser erases."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import edition_pb2, user_pb2
from tests.support.helpers import details, violated_fields

MISSING_ID = 9_000_000_000_000


def _edition(audience: Any, org_id: int, country: str = "+45") -> edition_pb2.Edition:
    edition = edition_pb2.Edition(
        organization_id=org_id,
        name="Roskilde 2027",
        timezone="Europe/Copenhagen",
        default_country_code=country,
    )
    return audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition


def _user(external_id: str, **fields: Any) -> user_pb2.User:
    attributes = fields.pop("attributes", None)
    user = user_pb2.User(external_id=external_id, **fields)
    if attributes is not None:
        user.attributes.update(attributes)
    return user


def _import(
    audience: Any, org_id: int, *batches: list[user_pb2.User], edition_id: int = 0
) -> apb.ImportUsersResponse:
    """One stream: org and edition in the first message only, then the other batches."""
    requests = [apb.ImportUsersRequest(users=batch) for batch in batches]
    requests[0].organization_id, requests[0].edition_id = org_id, edition_id
    return audience.ImportUsers(iter(requests))


def _listed(audience: Any, org_id: int, **filters: Any) -> dict[str, user_pb2.User]:
    page = audience.ListUsers(apb.ListUsersRequest(organization_id=org_id, **filters))
    return {u.external_id: u for u in page.results}


def _fails(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


def test_import_creates_then_reimport_updates(audience, org_id):
    first = _import(
        audience,
        org_id,
        [_user("a", email="Ann@Example.COM", first_name="Ann"), _user("b")],
        [_user("c", first_name="Carl", language="da")],
        [_user("d"), _user("e")],
    )
    assert (first.created, first.updated, first.rejected) == (5, 0, 0)
    assert list(first.rejections) == []

    again = _import(
        audience,
        org_id,
        [
            _user(
                "a",
                email="ann@new.example.org",
                first_name="Anna",
                last_name="Berg",
                email_consent=True,
            )
        ],
        [_user("c", first_name="Carl", language="en"), _user("f")],
    )
    assert (again.created, again.updated, again.rejected) == (1, 2, 0)

    users = _listed(audience, org_id)
    assert sorted(users) == ["a", "b", "c", "d", "e", "f"]
    a = users["a"]
    assert (a.email, a.first_name, a.last_name, a.email_consent) == (
        "ann@new.example.org",
        "Anna",
        "Berg",
        True,
    )
    assert a.organization_id == org_id
    assert a.modified.ToDatetime() >= a.created.ToDatetime()
    assert users["c"].language == "en"
    assert users["b"].first_name == ""  # untouched by the re-import


@pytest.mark.parametrize("split", [False, True])
def test_repeated_external_id_counts_the_same_in_one_batch_or_two(audience, org_id, split):
    editions = [_edition(audience, org_id).id for _ in range(2)]
    rows = [
        _user("a", first_name="First", email_unsubscribed=True, edition_ids=editions[:1]),
        _user("a", first_name="Second", edition_ids=editions[1:]),
    ]
    result = _import(audience, org_id, *([rows[:1], rows[1:]] if split else [rows]))
    assert (result.created, result.updated, result.rejected) == (1, 1, 0)
    (user,) = _listed(audience, org_id).values()
    assert (user.first_name, user.email_unsubscribed) == ("Second", True)
    assert sorted(user.edition_ids) == editions


def test_email_domain_is_normalised(audience, org_id):
    _import(audience, org_id, [_user("a", email="  Ann.Berg@Example.COM ")])
    assert _listed(audience, org_id)["a"].email == "Ann.Berg@example.com"


def test_reimport_never_clears_an_unsubscribe(audience, org_id):
    _import(
        audience,
        org_id,
        [_user("early", email_unsubscribed=True, sms_unsubscribed=True), _user("late")],
    )
    _import(audience, org_id, [_user("late", email_unsubscribed=True)])
    again = _import(audience, org_id, [_user("early", first_name="E"), _user("late")])
    assert again.updated == 2
    users = _listed(audience, org_id)
    assert (users["early"].email_unsubscribed, users["early"].sms_unsubscribed) == (True, True)
    assert users["early"].first_name == "E"
    assert (users["late"].email_unsubscribed, users["late"].sms_unsubscribed) == (True, False)


def test_bad_rows_are_rejected_one_by_one(audience, org_id):
    edition = _edition(audience, org_id)
    foreign = _edition(audience, org_id + 1)
    result = _import(
        audience,
        org_id,
        [
            _user("ok-1", email="one@example.org"),
            _user("bad-email", email="not-an-email"),
            _user("bad-phone", phone="12"),
            _user("", email="nobody@example.org"),
            _user("ok-2", phone="20123456"),
        ],
        [
            _user("long-name", first_name="x" * 256),
            _user("other-org", edition_ids=[edition.id, foreign.id]),
            _user("ok-3", edition_ids=[edition.id]),
        ],
        edition_id=edition.id,
    )
    assert (result.created, result.updated, result.rejected) == (3, 0, 5)
    got = [(r.index, r.external_id, r.field) for r in result.rejections]
    assert got == [
        (1, "bad-email", "email"),
        (2, "bad-phone", "phone"),
        (3, "", "external_id"),
        (5, "long-name", "first_name"),
        (6, "other-org", "edition_ids"),
    ]
    reasons = {r.field: r.reason for r in result.rejections}
    assert "@" in reasons["email"]
    assert "valid phone number" in reasons["phone"]
    assert "required" in reasons["external_id"]
    assert "255" in reasons["first_name"]
    assert str(foreign.id) in reasons["edition_ids"]
    assert sorted(_listed(audience, org_id)) == ["ok-1", "ok-2", "ok-3"]


def test_phones_are_normalised_to_e164(audience, org_id):
    edition = _edition(audience, org_id, country="+45")
    result = _import(
        audience,
        org_id,
        [
            _user("local", phone="20 12 34 56"),
            _user("uk", phone="+44 20 7946 0958"),
            _user("dashed", phone="+45 20-12-34-57"),
        ],
        edition_id=edition.id,
    )
    assert (result.created, result.rejected) == (3, 0)
    phones = {k: u.phone for k, u in _listed(audience, org_id).items()}
    assert phones == {"local": "+4520123456", "uk": "+442079460958", "dashed": "+4520123457"}


def test_local_phone_without_edition_country_is_rejected(audience, org_id):
    result = _import(
        audience, org_id, [_user("local", phone="20 12 34 56"), _user("intl", phone="+4520123456")]
    )
    assert (result.created, result.rejected) == (1, 1)
    assert [(r.external_id, r.field) for r in result.rejections] == [("local", "phone")]


@pytest.mark.parametrize("shape", ["no_org", "org_changes", "empty", "foreign_edition"])
def test_bad_stream_is_invalid_argument(audience, org_id, shape):
    foreign = _edition(audience, org_id + 1)
    requests = {
        "no_org": [apb.ImportUsersRequest(users=[_user("a")])],
        "org_changes": [
            apb.ImportUsersRequest(organization_id=org_id, users=[_user("a")]),
            apb.ImportUsersRequest(organization_id=org_id + 1, users=[_user("b")]),
        ],
        "empty": [],
        "foreign_edition": [
            apb.ImportUsersRequest(
                organization_id=org_id, edition_id=foreign.id, users=[_user("a")]
            )
        ],
    }[shape]
    error = _fails(audience.ImportUsers, iter(requests))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    expected = "edition_id" if shape == "foreign_edition" else "organization_id"
    assert violated_fields(error) == {expected}


def test_edition_cannot_change_mid_stream(audience, org_id):
    first, second = _edition(audience, org_id), _edition(audience, org_id)
    requests = [
        apb.ImportUsersRequest(organization_id=org_id, edition_id=first.id, users=[_user("a")]),
        apb.ImportUsersRequest(organization_id=org_id, edition_id=second.id, users=[_user("b")]),
    ]
    error = _fails(audience.ImportUsers, iter(requests))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"edition_id"}


def test_repeating_the_same_org_and_edition_is_allowed(audience, org_id):
    edition = _edition(audience, org_id)
    requests = [
        apb.ImportUsersRequest(
            organization_id=org_id, edition_id=edition.id, users=[_user(f"u{i}")]
        )
        for i in range(3)
    ]
    assert audience.ImportUsers(iter(requests)).created == 3


def test_attributes_round_trip(audience, org_id):
    attributes = {
        "ticket_type": "vip",
        "orders": 3,
        "ratio": 0.25,
        "flag": True,
        "none": None,
        "tags": ["early-bird", "local"],
        "profile": {"city": "Århus", "kids": [4, 7]},
    }
    _import(audience, org_id, [_user("a", attributes=attributes)])
    user = _listed(audience, org_id)["a"]
    assert json_format.MessageToDict(user.attributes) == attributes
    assert user.attributes["orders"] == 3
    assert user.attributes.fields["orders"].WhichOneof("kind") == "number_value"
    assert user.attributes.fields["none"].WhichOneof("kind") == "null_value"
    # Stored as the integer 3, so CEL compares it as an int.
    preview = audience.PreviewSegment(
        apb.PreviewSegmentRequest(organization_id=org_id, expression="user.attributes.orders == 3")
    )
    assert preview.count == 1


def test_get_user_lists_editions(audience, org_id):
    stream, extra = _edition(audience, org_id), _edition(audience, org_id)
    _import(
        audience,
        org_id,
        [_user("a", first_name="Ann", edition_ids=[extra.id])],
        edition_id=stream.id,
    )
    listed = _listed(audience, org_id)["a"]
    got = audience.GetUser(apb.GetUserRequest(id=listed.id)).user
    assert got == listed
    assert sorted(got.edition_ids) == sorted([stream.id, extra.id])
    assert got.first_name == "Ann"

    error = _fails(audience.GetUser, apb.GetUserRequest(id=MISSING_ID))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error)["ResourceInfo"].resource_name == f"users/{MISSING_ID}"


def test_list_users_filters(audience, org_id):
    edition = _edition(audience, org_id)
    _import(
        audience,
        org_id,
        [
            _user("in-both", email_consent=True, sms_consent=True),
            _user("in-email", email_consent=True),
        ],
        edition_id=edition.id,
    )
    _import(audience, org_id, [_user("out-sms", sms_consent=True), _user("out-none")])
    _import(audience, org_id + 1, [_user("elsewhere", email_consent=True)])

    assert sorted(_listed(audience, org_id)) == ["in-both", "in-email", "out-none", "out-sms"]
    assert sorted(_listed(audience, org_id, edition_id=edition.id)) == ["in-both", "in-email"]
    assert sorted(_listed(audience, org_id, email_consent=True)) == ["in-both", "in-email"]
    assert sorted(_listed(audience, org_id, email_consent=False)) == ["out-none", "out-sms"]
    assert sorted(_listed(audience, org_id, sms_consent=True)) == ["in-both", "out-sms"]
    assert sorted(_listed(audience, org_id, sms_consent=False, email_consent=True)) == ["in-email"]
    assert sorted(_listed(audience, org_id, edition_id=edition.id, sms_consent=False)) == [
        "in-email"
    ]


def test_list_users_pages_oldest_first(audience, org_id):
    _import(audience, org_id, [_user(f"u{i}") for i in range(5)])

    def page(number: int) -> apb.ListUsersResponse:
        return audience.ListUsers(
            apb.ListUsersRequest(organization_id=org_id, page=number, page_size=2)
        )

    pages = [page(n) for n in (1, 2, 3)]
    assert [p.count for p in pages] == [5, 5, 5]
    assert [(p.previous_page, p.next_page) for p in pages] == [(0, 2), (1, 3), (2, 0)]
    ids = [u.id for p in pages for u in p.results]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [u.external_id for p in pages for u in p.results] == [f"u{i}" for i in range(5)]
    assert _fails(page, 4).code() == grpc.StatusCode.OUT_OF_RANGE


def test_list_users_requires_organization(audience):
    error = _fails(audience.ListUsers, apb.ListUsersRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"organization_id"}


def test_delete_user_erases(audience, org_id):
    edition = _edition(audience, org_id)
    _import(
        audience,
        org_id,
        [
            _user("gone", email="gone@example.org", first_name="Gone"),
            _user("kept", email="kept@example.org"),
        ],
        edition_id=edition.id,
    )
    gone = _listed(audience, org_id)["gone"]
    preview = apb.PreviewSegmentRequest(
        organization_id=org_id, expression="true", edition_id=edition.id
    )
    assert audience.PreviewSegment(preview).count == 2

    audience.DeleteUser(apb.DeleteUserRequest(id=gone.id))

    assert _fails(audience.GetUser, apb.GetUserRequest(id=gone.id)).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    assert sorted(_listed(audience, org_id)) == ["kept"]
    assert sorted(_listed(audience, org_id, edition_id=edition.id)) == ["kept"]
    after = audience.PreviewSegment(preview)
    assert after.count == 1 and [u.external_id for u in after.sample] == ["kept"]
    everyone = audience.PreviewSegment(
        apb.PreviewSegmentRequest(organization_id=org_id, expression="true")
    )
    assert [u.external_id for u in everyone.sample] == ["kept"]
    again = _fails(audience.DeleteUser, apb.DeleteUserRequest(id=gone.id))
    assert again.code() == grpc.StatusCode.NOT_FOUND
    # The external id is free again: importing it makes a new person, not the erased one.
    reimport = _import(audience, org_id, [_user("gone")])
    assert (reimport.created, reimport.updated) == (1, 0)
    assert _listed(audience, org_id)["gone"].id != gone.id
