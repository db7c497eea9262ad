"""AudienceService editions over a real channel: round trips, validation with a BadRequest
naming each bad field, NOT_FOUND, pagination, and the update mask rules."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import edition_pb2
from tests.support.helpers import details, violated_fields

MISSING_ID = 9_000_000_000_000


def _edition(org_id: int, **fields: str) -> edition_pb2.Edition:
    values = {
        "name": "Roskilde 2027",
        "timezone": "Europe/Copenhagen",
        "default_country_code": "+45",
        "default_language": "da",
        "start_date": "2027-06-26",
        "end_date": "2027-07-03",
    }
    values.update(fields)
    return edition_pb2.Edition(organization_id=org_id, **values)


def _create(audience, edition: edition_pb2.Edition) -> edition_pb2.Edition:
    return audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition


def _update(audience, edition_id: int, paths: list[str], **fields: str) -> edition_pb2.Edition:
    request = apb.UpdateEditionRequest(
        id=edition_id,
        edition=edition_pb2.Edition(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    return audience.UpdateEdition(request).edition


def _fails(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def test_create_get_round_trip(audience, org_id):
    created = _create(audience, _edition(org_id, name="  Roskilde 2027  "))
    assert created.id > 0
    assert created.organization_id == org_id
    assert created.name == "Roskilde 2027"  # stored trimmed
    assert (created.timezone, created.default_country_code, created.default_language) == (
        "Europe/Copenhagen",
        "+45",
        "da",
    )
    assert (created.start_date, created.end_date) == ("2027-06-26", "2027-07-03")
    assert created.HasField("created") and created.HasField("modified")
    got = audience.GetEdition(apb.GetEditionRequest(id=created.id)).edition
    assert got == created


def test_optional_fields_may_be_empty(audience, org_id):
    created = _create(
        audience, edition_pb2.Edition(organization_id=org_id, name="Minimal", timezone="UTC")
    )
    got = audience.GetEdition(apb.GetEditionRequest(id=created.id)).edition
    assert (got.default_country_code, got.default_language, got.start_date, got.end_date) == (
        "",
        "",
        "",
        "",
    )


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": "Europe"}, "timezone"),  # a directory of the tz database, not a zone
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"default_country_code": "45"}, "default_country_code"),
        ({"default_country_code": "+abc"}, "default_country_code"),
        ({"default_country_code": "+"}, "default_country_code"),
        ({"default_country_code": "+123456"}, "default_country_code"),
        ({"default_country_code": "+\u0664\u0665"}, "default_country_code"),  # Arabic-Indic digits
        ({"default_language": "x" * 36}, "default_language"),
        ({"start_date": "2027-02-30"}, "start_date"),
        ({"start_date": "26/06/2027"}, "start_date"),
        ({"end_date": "soon"}, "end_date"),
        ({"start_date": "2027-07-03", "end_date": "2027-06-26"}, "end_date"),
    ],
)
def test_create_rejects_bad_field(audience, org_id, fields, bad):
    request = apb.CreateEditionRequest(edition=_edition(org_id, **fields))
    error = _fails(audience.CreateEdition, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {f"edition.{bad}"}
    assert details(error)["ErrorInfo"].domain == "campaigns.v1"


def test_create_reports_every_bad_field_at_once(audience):
    request = apb.CreateEditionRequest(
        edition=edition_pb2.Edition(
            name=" ", timezone="Mars/Base", default_country_code="45", start_date="x"
        )
    )
    error = _fails(audience.CreateEdition, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {
        "edition.organization_id",
        "edition.name",
        "edition.timezone",
        "edition.default_country_code",
        "edition.start_date",
    }


def test_get_missing_edition_is_not_found(audience):
    error = _fails(audience.GetEdition, apb.GetEditionRequest(id=MISSING_ID))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error)["ResourceInfo"].resource_name == f"editions/{MISSING_ID}"


def test_update_changes_only_masked_fields(audience, org_id):
    created = _create(audience, _edition(org_id))
    updated = _update(
        audience,
        created.id,
        ["name", "timezone"],
        name="Renamed",
        timezone="America/New_York",
        default_language="en",
    )
    assert (updated.name, updated.timezone) == ("Renamed", "America/New_York")
    assert updated.default_language == "da"  # not in the mask: unchanged
    assert updated.created == created.created
    assert updated.modified.ToDatetime() >= created.modified.ToDatetime()
    assert audience.GetEdition(apb.GetEditionRequest(id=created.id)).edition == updated


def test_update_can_clear_optional_fields(audience, org_id):
    created = _create(audience, _edition(org_id))
    updated = _update(audience, created.id, ["default_country_code", "start_date", "end_date"])
    assert (updated.default_country_code, updated.start_date, updated.end_date) == ("", "", "")
    assert updated.name == created.name


@pytest.mark.parametrize(
    ("paths", "fields", "bad"),
    [
        (["name"], {"name": " "}, "name"),
        (["timezone"], {"timezone": "Mars/Base"}, "timezone"),
        (["default_country_code"], {"default_country_code": "+abc"}, "default_country_code"),
        (["start_date"], {"start_date": "2027-13-01"}, "start_date"),
        # The merged edition is checked: an end before the stored start is refused.
        (["end_date"], {"end_date": "2027-01-01"}, "end_date"),
    ],
)
def test_update_rejects_bad_field(audience, org_id, paths, fields, bad):
    created = _create(audience, _edition(org_id))
    error = _fails(lambda: _update(audience, created.id, paths, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {f"edition.{bad}"}
    assert audience.GetEdition(apb.GetEditionRequest(id=created.id)).edition == created


@pytest.mark.parametrize("paths", [[], ["organization_id"], ["id"], ["created"], ["nmae"]])
def test_update_mask_must_name_editable_fields(audience, org_id, paths):
    created = _create(audience, _edition(org_id))
    with pytest.raises(grpc.RpcError) as info:
        _update(audience, created.id, paths, name="x", organization_id=1)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(info.value) == {"update_mask"}
    assert audience.GetEdition(apb.GetEditionRequest(id=created.id)).edition == created


def test_update_missing_edition_is_not_found(audience):
    with pytest.raises(grpc.RpcError) as info:
        _update(audience, MISSING_ID, ["name"], name="Ghost")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_pages_newest_first(audience, org_id):
    ids = [_create(audience, _edition(org_id, name=f"Edition {i}")).id for i in range(5)]
    _create(audience, _edition(org_id + 1))  # another organization: never listed

    def page(number: int) -> apb.ListEditionsResponse:
        return audience.ListEditions(
            apb.ListEditionsRequest(organization_id=org_id, page=number, page_size=2)
        )

    pages = [page(n) for n in (1, 2, 3)]
    assert [p.count for p in pages] == [5, 5, 5]
    assert [(p.previous_page, p.next_page) for p in pages] == [(0, 2), (1, 3), (2, 0)]
    listed = [e.id for p in pages for e in p.results]
    assert listed == list(reversed(ids))
    assert all(e.organization_id == org_id for p in pages for e in p.results)

    everything = audience.ListEditions(apb.ListEditionsRequest(organization_id=org_id))
    assert [e.id for e in everything.results] == listed
    assert (everything.next_page, everything.previous_page) == (0, 0)

    with pytest.raises(grpc.RpcError) as info:
        page(4)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert violated_fields(info.value) == {"page"}


def test_list_of_empty_organization_is_one_empty_page(audience, org_id):
    empty = audience.ListEditions(apb.ListEditionsRequest(organization_id=org_id))
    assert (empty.count, list(empty.results), empty.next_page) == (0, [], 0)
    with pytest.raises(grpc.RpcError) as info:
        audience.ListEditions(apb.ListEditionsRequest(organization_id=org_id, page=2))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("page", "page_size", "bad"),
    [
        (-1, 0, {"page"}),
        (0, -1, {"page_size"}),
        (0, 1001, {"page_size"}),
        (-2, 5000, {"page", "page_size"}),
    ],
)
def test_list_rejects_bad_paging(audience, org_id, page, page_size, bad):
    with pytest.raises(grpc.RpcError) as info:
        audience.ListEditions(
            apb.ListEditionsRequest(organization_id=org_id, page=page, page_size=page_size)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(info.value) == bad
