"""AudienceService segments over a real channel: CRUD, expression errors with line and column,
ValidateSegmentExpression, and PreviewSegment over users imported through ImportUsers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import edition_pb2, segment_pb2, user_pb2
from tests.support.helpers import details, violated_fields

MISSING_ID = 9_000_000_000_000
EXAMPLE = 'user.attributes.ticket_type == "vip" && "early-bird" in user.attributes.tags'
# Line 2 ends after 23 characters; the parser wants an operand at column 24.
BROKEN = 'user.attributes.ticket_type == "vip" &&\n  user.email_consent =='

# external_id -> attributes; the example expression must pick exactly the "match-" users.
PEOPLE: dict[str, dict[str, Any]] = {
    "match-1": {"ticket_type": "vip", "tags": ["early-bird"]},
    "match-2": {"ticket_type": "vip", "tags": ["local", "early-bird"], "orders": 2},
    "match-3": {"ticket_type": "vip", "tags": ["press", "early-bird", "crew"]},
    "regular-early": {"ticket_type": "regular", "tags": ["early-bird"]},
    "vip-late": {"ticket_type": "vip", "tags": ["local"]},
    "vip-no-tags": {"ticket_type": "vip"},
    "vip-tags-string": {"ticket_type": "vip", "tags": "early-bird"},
    "vip-tags-number": {"ticket_type": "vip", "tags": 3},
    "vip-nested": {"ticket_type": "vip", "tags": [["early-bird"]]},
    "vip-case": {"ticket_type": "VIP", "tags": ["early-bird"]},
    "type-number": {"ticket_type": 1, "tags": ["early-bird"]},
    "no-attributes": {},
}
MATCHES = {"match-1", "match-2", "match-3"}


def _edition(audience: Any, org_id: int) -> edition_pb2.Edition:
    edition = edition_pb2.Edition(organization_id=org_id, name="Roskilde 2027", timezone="UTC")
    return audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition


def _create(audience: Any, org_id: int, **fields: Any) -> segment_pb2.Segment:
    values = {"organization_id": org_id, "name": "VIP early birds", "expression": EXAMPLE}
    values.update(fields)
    request = apb.CreateSegmentRequest(segment=segment_pb2.Segment(**values))
    return audience.CreateSegment(request).segment


def _update(audience: Any, segment_id: int, paths: list[str], **fields: Any) -> segment_pb2.Segment:
    request = apb.UpdateSegmentRequest(
        id=segment_id,
        segment=segment_pb2.Segment(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    return audience.UpdateSegment(request).segment


def _fails(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def _import(
    audience: Any, org_id: int, people: dict[str, dict[str, Any]], edition_id: int = 0
) -> None:
    users = []
    for external_id, attributes in people.items():
        user = user_pb2.User(external_id=external_id)
        user.attributes.update(attributes)
        users.append(user)
    result = audience.ImportUsers(
        iter([apb.ImportUsersRequest(organization_id=org_id, edition_id=edition_id, users=users)])
    )
    assert (result.created + result.updated, result.rejected) == (len(people), 0)


def _preview(audience: Any, **fields: Any) -> apb.PreviewSegmentResponse:
    return audience.PreviewSegment(apb.PreviewSegmentRequest(**fields))


def test_crud_round_trip(audience, org_id):
    edition = _edition(audience, org_id)
    created = _create(audience, org_id, name="  VIPs  ", edition_id=edition.id)
    assert created.id > 0
    assert (created.organization_id, created.edition_id) == (org_id, edition.id)
    assert (created.name, created.expression) == ("VIPs", EXAMPLE)
    assert created.HasField("created") and created.HasField("modified")
    assert audience.GetSegment(apb.GetSegmentRequest(id=created.id)).segment == created

    updated = _update(
        audience,
        created.id,
        ["name", "expression"],
        name="Consenting",
        expression="user.email_consent",
        edition_id=0,
    )
    assert (updated.name, updated.expression) == ("Consenting", "user.email_consent")
    assert updated.edition_id == edition.id  # not in the mask
    assert updated.created == created.created
    cleared = _update(audience, created.id, ["edition_id"])
    assert cleared.edition_id == 0 and cleared.name == "Consenting"
    assert audience.GetSegment(apb.GetSegmentRequest(id=created.id)).segment == cleared

    audience.DeleteSegment(apb.DeleteSegmentRequest(id=created.id))
    for call, request in (
        (audience.GetSegment, apb.GetSegmentRequest(id=created.id)),
        (audience.DeleteSegment, apb.DeleteSegmentRequest(id=created.id)),
    ):
        error = _fails(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["ResourceInfo"].resource_name == f"segments/{created.id}"


def test_list_filters_and_pages_newest_first(audience, org_id):
    edition = _edition(audience, org_id)
    loose = [_create(audience, org_id, name=f"s{i}").id for i in range(2)]
    bound = [_create(audience, org_id, name=f"e{i}", edition_id=edition.id).id for i in range(2)]
    _create(audience, org_id + 1)

    def listed(**fields: Any) -> apb.ListSegmentsResponse:
        return audience.ListSegments(apb.ListSegmentsRequest(organization_id=org_id, **fields))

    assert [s.id for s in listed().results] == list(reversed(loose + bound))
    assert listed().count == 4
    assert [s.id for s in listed(edition_id=edition.id).results] == list(reversed(bound))
    first, second = listed(page_size=3), listed(page=2, page_size=3)
    assert (first.next_page, second.previous_page, second.next_page) == (2, 1, 0)
    assert [s.id for s in [*first.results, *second.results]] == list(reversed(loose + bound))


def test_invalid_expression_names_line_and_column(audience, org_id):
    error = _fails(_create, audience, org_id, expression=BROKEN)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert violation.field == "expression"
    assert "line 2, column 24" in violation.description
    assert "Syntax error" in violation.description

    segment = _create(audience, org_id)
    error = _fails(_update, audience, segment.id, ["expression"], expression="user.(")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "line 1, column 6" in details(error)["BadRequest"].field_violations[0].description
    assert audience.GetSegment(apb.GetSegmentRequest(id=segment.id)).segment == segment


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"name": ""}, {"name"}),
        ({"name": "   "}, {"name"}),
        ({"name": "x" * 256}, {"name"}),
        ({"expression": ""}, {"expression"}),
        ({"expression": " \n "}, {"expression"}),
        ({"expression": "true ||" + " true ||" * 600 + " true"}, {"expression"}),
        ({"organization_id": 0, "name": ""}, {"segment.organization_id", "name"}),
    ],
)
def test_create_rejects_bad_input(audience, org_id, fields, bad):
    error = _fails(_create, audience, org_id, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == bad


def test_edition_of_another_organization_is_refused(audience, org_id):
    foreign = _edition(audience, org_id + 1)
    error = _fails(_create, audience, org_id, edition_id=foreign.id)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"edition_id"}
    segment = _create(audience, org_id)
    error = _fails(_update, audience, segment.id, ["edition_id"], edition_id=foreign.id)
    assert violated_fields(error) == {"edition_id"}
    assert audience.GetSegment(apb.GetSegmentRequest(id=segment.id)).segment.edition_id == 0


@pytest.mark.parametrize("paths", [[], ["organization_id"], ["id"], ["nmae"]])
def test_update_mask_must_name_editable_fields(audience, org_id, paths):
    segment = _create(audience, org_id)
    error = _fails(_update, audience, segment.id, paths, name="x", organization_id=1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"update_mask"}


def test_validate_valid_expression_lists_pushed_down_clauses(audience):
    response = audience.ValidateSegmentExpression(
        apb.ValidateSegmentExpressionRequest(expression=EXAMPLE)
    )
    assert response.valid
    assert (response.error, response.line, response.column) == ("", 0, 0)
    assert list(response.pushed_down) == [
        'user.attributes.ticket_type == "vip"',
        '"early-bird" in user.attributes.tags',
    ]
    cel_only = audience.ValidateSegmentExpression(
        apb.ValidateSegmentExpressionRequest(expression="user.attributes.orders > 2")
    )
    assert cel_only.valid and list(cel_only.pushed_down) == []


@pytest.mark.parametrize(
    ("expression", "line", "column"),
    [
        (BROKEN, 2, 24),
        ("user.first_name ==== 1", 1, 19),
        ("user.(", 1, 6),
        ("", 1, 1),
    ],
)
def test_validate_invalid_expression(audience, expression, line, column):
    response = audience.ValidateSegmentExpression(
        apb.ValidateSegmentExpressionRequest(expression=expression)
    )
    assert not response.valid
    assert "Syntax error" in response.error
    assert (response.line, response.column) == (line, column)
    assert list(response.pushed_down) == []


def test_example_expression_selects_exactly_the_right_users(audience, org_id):
    _import(audience, org_id, PEOPLE)
    _import(audience, org_id + 1, {"match-elsewhere": PEOPLE["match-1"]})
    preview = _preview(audience, organization_id=org_id, expression=EXAMPLE, sample_size=100)
    assert preview.count == len(MATCHES)
    assert {u.external_id for u in preview.sample} == MATCHES
    assert all(u.organization_id == org_id for u in preview.sample)
    # The SQL pre-filter leaves only candidates for CEL, never fewer than the matches.
    assert len(MATCHES) <= preview.evaluated < len(PEOPLE)
    everyone = _preview(audience, organization_id=org_id, expression="true", sample_size=100)
    assert (everyone.count, everyone.evaluated) == (len(PEOPLE), 0)  # exact: SQL decided


def test_preview_stored_segment_with_edition_restriction(audience, org_id):
    edition = _edition(audience, org_id)
    _import(
        audience, org_id, {k: v for k, v in PEOPLE.items() if k != "match-2"}, edition_id=edition.id
    )
    _import(audience, org_id, {"match-2": PEOPLE["match-2"]})  # not in the edition
    bound = _create(audience, org_id, edition_id=edition.id)
    loose = _create(audience, org_id)

    in_edition = _preview(audience, segment_id=bound.id)
    assert in_edition.count == 2
    assert {u.external_id for u in in_edition.sample} == {"match-1", "match-3"}
    assert all(edition.id in u.edition_ids for u in in_edition.sample)
    assert _preview(audience, segment_id=loose.id).count == 3

    unsaved = _preview(audience, organization_id=org_id, edition_id=edition.id, expression=EXAMPLE)
    assert {u.external_id for u in unsaved.sample} == {"match-1", "match-3"}


def test_preview_sample_size(audience, org_id):
    _import(audience, org_id, {f"u{i:02}": {"n": i} for i in range(15)})
    default = _preview(audience, organization_id=org_id, expression="true")
    assert default.count == 15
    assert [u.external_id for u in default.sample] == [f"u{i:02}" for i in range(10)]
    two = _preview(
        audience, organization_id=org_id, expression="user.attributes.n >= 5", sample_size=2
    )
    assert two.count == 10
    assert [u.external_id for u in two.sample] == ["u05", "u06"]
    assert dict(two.sample[0].attributes) == {"n": 5}
    for size in (101, -1):
        error = _fails(
            _preview, audience, organization_id=org_id, expression="true", sample_size=size
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(error) == {"sample_size"}


def test_preview_rejects_bad_requests(audience, org_id):
    error = _fails(_preview, audience, expression="true")
    assert violated_fields(error) == {"organization_id"}
    error = _fails(_preview, audience, organization_id=org_id, expression=BROKEN)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"expression"}
    error = _fails(_preview, audience, segment_id=MISSING_ID)
    assert error.code() == grpc.StatusCode.NOT_FOUND
