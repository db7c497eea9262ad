"""ListCampaigns over the real gRPC channel: filters, every ordering, and page-number paging.

Each test lists only its own fresh organization. `total_recipients` (and, to force ties,
`created` and `modified`) are written straight to the row, as only workers would change them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

from campaigns.v1 import campaign_pb2 as c
from campaigns.v1 import campaign_service_pb2 as cpb
from server.store.db import release_connection
from server.store.models import Campaign
from tests.support.helpers import (
    DEFAULT_SEGMENTS,
    details,
    future,
    make_campaign,
    make_edition,
    make_email_message,
    make_segment,
    violated_fields,
)

ORDERINGS = ["created", "modified", "name", "scheduled_at", "total_recipients"]


def listing(campaigns: Any, org_id: int, **fields: Any) -> cpb.ListCampaignsResponse:
    return campaigns.ListCampaigns(cpb.ListCampaignsRequest(organization_id=org_id, **fields))


def set_columns(ids: list[int], **values: Any) -> None:
    try:
        Campaign.update(**values).where(Campaign.id.in_(ids)).execute()
    finally:
        release_connection()


def sort_value(campaign: c.Campaign, field: str) -> Any:
    if field in ("created", "modified", "scheduled_at"):
        return getattr(campaign, field).ToDatetime() if campaign.HasField(field) else None
    return getattr(campaign, field)


def expected_ids(items: list[c.Campaign], ordering: str) -> list[int]:
    """The documented order: by the key, then by id, in the same direction; unset last."""
    field, descending = ordering.removeprefix("-"), ordering.startswith("-")
    known = [x for x in items if sort_value(x, field) is not None]
    unknown = [x for x in items if sort_value(x, field) is None]
    known.sort(key=lambda x: (sort_value(x, field), x.id), reverse=descending)
    unknown.sort(key=lambda x: x.id, reverse=descending)
    return [x.id for x in known + unknown]


@pytest.fixture
def seeded(campaigns, audience, org_id) -> list[c.Campaign]:
    """Six campaigns with a tie on every sort key, and unset scheduled_at on two."""
    edition = make_edition(audience, org_id)
    at = [future(86400 * d) for d in (3, 1, 1, 2)]
    rows = [
        ("delta", at[0]),
        ("alpha", None),
        ("charlie", at[1]),
        ("alpha", at[2]),
        ("bravo", None),
        ("echo", at[3]),
    ]
    made = [
        make_campaign(campaigns, edition, name=name, **({"scheduled_at": when} if when else {}))
        for name, when in rows
    ]
    ids = [x.id for x in made]
    for recipients, group in ((10, [ids[0], ids[3]]), (30, [ids[2], ids[5]]), (5, [ids[4]])):
        set_columns(group, total_recipients=recipients)
    first = made[2].created.ToDatetime()
    set_columns([ids[2], ids[3]], created=first)
    other = make_segment(audience, edition, name="Another")
    campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=ids[0],
            campaign=c.Campaign(segment_id=other.id),
            update_mask={"paths": ["segment_id"]},
        )
    )
    set_columns([ids[4], ids[5]], modified=first)
    items = list(listing(campaigns, org_id, page_size=1000).results)
    assert sorted(x.id for x in items) == sorted(ids)
    for field in ORDERINGS:  # every key really has a tie to break
        values = [sort_value(x, field) for x in items]
        assert len(set(values)) < len(values), field
    return items


@pytest.mark.parametrize("ordering", [p + f for f in ORDERINGS for p in ("", "-")])
def test_every_ordering_sorts_and_pages_without_overlap(campaigns, org_id, seeded, ordering):
    want = expected_ids(seeded, ordering)
    whole = listing(campaigns, org_id, ordering=ordering, page_size=1000)
    assert [x.id for x in whole.results] == want
    walked, page = [], 1
    while page:
        got = listing(campaigns, org_id, ordering=ordering, page=page, page_size=4)
        assert got.count == len(want)
        assert got.previous_page == page - 1
        walked += [x.id for x in got.results]
        page = got.next_page
    assert walked == want


def test_default_ordering_is_newest_first(campaigns, org_id, seeded):
    got = listing(campaigns, org_id)
    assert [x.id for x in got.results] == expected_ids(seeded, "-created")
    assert [x.id for x in got.results] == [
        x.id for x in listing(campaigns, org_id, ordering="-created").results
    ]


@pytest.mark.parametrize("ordering", ["status", "id", "-", "--created", "Name", "name,id", "+name"])
def test_unknown_ordering_is_invalid(campaigns, org_id, ordering):
    with pytest.raises(grpc.RpcError) as err:
        listing(campaigns, org_id, ordering=ordering)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"ordering"}


@pytest.fixture
def catalogue(campaigns, audience, messages, org_id) -> dict[str, Any]:
    """Five campaigns of one organization over two editions, and a decoy in another."""
    e1, e2 = make_edition(audience, org_id), make_edition(audience, org_id)

    def email(edition: Any) -> dict[str, Any]:
        return {
            "channel": c.CHANNEL_EMAIL,
            "sms_body": "",
            "email_message_id": make_email_message(messages, edition).id,
        }

    made = {
        "Summer Sale": make_campaign(campaigns, e1, name="Summer Sale"),
        "summer 50% off": make_campaign(campaigns, e1, name="summer 50% off", **email(e1)),
        "early_bird": make_campaign(campaigns, e2, name="early_bird"),
        "earlyXbird": make_campaign(campaigns, e2, name="earlyXbird", **email(e2)),
        "100 percent": make_campaign(campaigns, e1, name="100 percent"),
    }
    campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=made["summer 50% off"].id, scheduled_at=future())
    )
    campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=made["early_bird"].id))
    decoy = make_campaign(campaigns, make_edition(audience, org_id + 1), name="Summer Sale")
    return {"e1": e1.id, "e2": e2.id, "decoy": decoy.id}


FILTERS = [
    ({"channel": c.CHANNEL_SMS}, {"Summer Sale", "early_bird", "100 percent"}),
    ({"channel": c.CHANNEL_EMAIL}, {"summer 50% off", "earlyXbird"}),
    ({"edition_id": "e1"}, {"Summer Sale", "summer 50% off", "100 percent"}),
    ({"edition_id": "e2"}, {"early_bird", "earlyXbird"}),
    ({"status": c.CAMPAIGN_STATUS_DRAFT}, {"Summer Sale", "earlyXbird", "100 percent"}),
    ({"status": c.CAMPAIGN_STATUS_SCHEDULED}, {"summer 50% off"}),
    ({"status": c.CAMPAIGN_STATUS_CANCELLED}, {"early_bird"}),
    ({"status": c.CAMPAIGN_STATUS_SENT}, set()),
    ({"search": "SUMMER"}, {"Summer Sale", "summer 50% off"}),
    ({"search": "  sUmMeR sale "}, {"Summer Sale"}),
    ({"search": "%"}, {"summer 50% off"}),
    ({"search": "0%"}, {"summer 50% off"}),
    ({"search": "100%"}, set()),
    ({"search": "_"}, {"early_bird"}),
    ({"search": "Y_B"}, {"early_bird"}),
    ({"search": "early"}, {"early_bird", "earlyXbird"}),
    ({"search": "nothing like it"}, set()),
    ({"channel": c.CHANNEL_SMS, "edition_id": "e1", "search": "summer"}, {"Summer Sale"}),
    ({"channel": c.CHANNEL_EMAIL, "status": c.CAMPAIGN_STATUS_DRAFT}, {"earlyXbird"}),
    ({}, {"Summer Sale", "summer 50% off", "early_bird", "earlyXbird", "100 percent"}),
]


@pytest.mark.parametrize(("filters", "names"), FILTERS, ids=[str(f[0]) for f in FILTERS])
def test_filters(campaigns, org_id, catalogue, filters, names):
    filters = {
        k: catalogue.get(v, v) if isinstance(v, str) and k == "edition_id" else v
        for k, v in filters.items()
    }
    got = listing(campaigns, org_id, **filters)
    assert got.count == len(names)
    assert sorted(x.name for x in got.results) == sorted(names)
    assert all(x.organization_id == org_id for x in got.results)


def test_search_ignores_case_beyond_ascii(campaigns, audience, org_id):
    make_campaign(campaigns, make_edition(audience, org_id), name="Æblekage på Østerbro")
    for search in ("Æblekage", "æblekage", "ÆBLEKAGE", "østerbro", "PÅ"):
        assert listing(campaigns, org_id, search=search).count == 1, search


def test_organization_filter(campaigns, org_id, catalogue):
    other = listing(campaigns, org_id + 1)
    assert [x.id for x in other.results] == [catalogue["decoy"]]
    # Without the organization filter, the edition still scopes the listing.
    by_edition = campaigns.ListCampaigns(cpb.ListCampaignsRequest(edition_id=catalogue["e2"]))
    assert sorted(x.name for x in by_edition.results) == ["earlyXbird", "early_bird"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"channel": 9}, "channel"),
        ({"status": 42}, "status"),
        ({"search": "s" * 256}, "search"),
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page": -1}, "page"),
    ],
)
def test_bad_listing_requests_are_invalid(campaigns, org_id, fields, field):
    with pytest.raises(grpc.RpcError) as err:
        listing(campaigns, org_id, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {field}


def test_empty_listing_is_one_empty_page(campaigns, org_id):
    for page in (0, 1):
        got = listing(campaigns, org_id, page=page)
        assert (got.count, got.next_page, got.previous_page, len(got.results)) == (0, 0, 0, 0)
    with pytest.raises(grpc.RpcError) as err:
        listing(campaigns, org_id, page=2)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_page_numbers_and_the_end(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    ids = [make_campaign(campaigns, edition, name=f"c{i}").id for i in range(5)][::-1]
    pages = [listing(campaigns, org_id, page=p, page_size=2) for p in (0, 1, 2, 3)]
    assert pages[0] == pages[1]
    assert [(p.next_page, p.previous_page) for p in pages[1:]] == [(2, 0), (3, 1), (0, 2)]
    assert [[x.id for x in p.results] for p in pages[1:]] == [ids[:2], ids[2:4], ids[4:]]
    assert {p.count for p in pages} == {5}
    for page, size in ((4, 2), (2, 5), (10**6, 1)):
        with pytest.raises(grpc.RpcError) as err:
            listing(campaigns, org_id, page=page, page_size=size)
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert violated_fields(err.value) == {"page"}
        assert details(err.value)["ErrorInfo"].reason == "OUT_OF_RANGE"
    last = listing(campaigns, org_id, page=5, page_size=1)
    assert ([x.id for x in last.results], last.next_page, last.previous_page) == ([ids[4]], 0, 4)


def test_page_size_defaults_to_100_and_allows_1000(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    created = dt.datetime(2030, 1, 1)
    rows = [
        {
            "organization_id": org_id,
            "edition": edition.id,
            "segment_id": DEFAULT_SEGMENTS[edition.id],
            "name": f"n{i}",
            "channel": "sms",
            "sms_body": "hi",
            "status": "draft",
            "created": created + dt.timedelta(seconds=i),
        }
        for i in range(101)
    ]
    try:
        Campaign.insert_many(rows).execute()
    finally:
        release_connection()
    default = listing(campaigns, org_id, page_size=0)
    assert (default.count, len(default.results), default.next_page) == (101, 100, 2)
    assert default.results[0].name == "n100"
    rest = listing(campaigns, org_id, page=2)
    assert ([x.name for x in rest.results], rest.next_page, rest.previous_page) == (["n0"], 0, 1)
    big = listing(campaigns, org_id, page_size=1000)
    assert (len(big.results), big.next_page, big.previous_page) == (101, 0, 0)
