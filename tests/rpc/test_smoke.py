"""The server answers over a real channel, on the configured backend."""

from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.support.helpers import make_campaign, make_edition


def test_create_then_get(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    created = make_campaign(campaigns, edition)
    got = campaigns.GetCampaign(cpb.GetCampaignRequest(id=created.id)).campaign
    assert got == created
    assert got.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT
    assert got.timezone == "Europe/Copenhagen"
