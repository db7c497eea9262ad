"""CampaignService: parse the request, call the domain, convert the answer. Nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from campaigns.v1 import campaign_service_pb2 as pb
from campaigns.v1 import campaign_service_pb2_grpc as pb_grpc
from server.campaigns import commands, queries
from server.campaigns.commands import CampaignInput
from server.campaigns.ports import Dispatcher
from server.campaigns.queries import CampaignFilter
from server.campaigns.stats import read_stats
from server.campaigns.watch import StatsHub
from server.core.status import Status, is_final
from server.rpc import convert
from server.store.pagination import PageRequest


def _input(msg: pb.CreateCampaignRequest | pb.UpdateCampaignRequest) -> CampaignInput:
    c = msg if isinstance(msg, pb.CreateCampaignRequest) else msg.campaign
    prefix = "" if isinstance(msg, pb.CreateCampaignRequest) else "campaign."
    return CampaignInput(
        organization_id=c.organization_id,
        edition_id=c.edition_id,
        segment_id=c.segment_id,
        name=c.name,
        channel=convert.channel(c.channel, prefix + "channel"),
        email_message_id=c.email_message_id,
        sms_body=c.sms_body,
        scheduled_at=convert.optional_timestamp(c, "scheduled_at", prefix + "scheduled_at"),
    )


class CampaignServicer(pb_grpc.CampaignServiceServicer):
    def __init__(self, dispatcher: Dispatcher, hub: StatsHub) -> None:
        self.dispatcher = dispatcher
        self.hub = hub

    def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: grpc.ServicerContext
    ) -> pb.ListCampaignsResponse:
        flt = CampaignFilter(
            channel=convert.channel(request.channel),
            edition_id=request.edition_id,
            organization_id=request.organization_id,
            status=convert.status(request.status),
            search=request.search,
        )
        page = queries.list_campaigns(
            flt, request.ordering, PageRequest(request.page, request.page_size)
        )
        return pb.ListCampaignsResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[convert.campaign_row_to_pb(row) for row in page.results],
        )

    def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.ServicerContext
    ) -> pb.CreateCampaignResponse:
        campaign = commands.create_campaign(
            _input(request), request.request_id, convert.fingerprint(request)
        )
        return pb.CreateCampaignResponse(campaign=convert.campaign_to_pb(campaign))

    def GetCampaign(
        self, request: pb.GetCampaignRequest, context: grpc.ServicerContext
    ) -> pb.GetCampaignResponse:
        campaign = queries.get_campaign(request.id)
        return pb.GetCampaignResponse(campaign=convert.campaign_row_to_pb(campaign))

    def UpdateCampaign(
        self, request: pb.UpdateCampaignRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCampaignResponse:
        campaign = commands.update_campaign(
            request.id,
            _input(request),
            list(request.update_mask.paths),
            request.etag,
            self.dispatcher,
        )
        return pb.UpdateCampaignResponse(campaign=convert.campaign_to_pb(campaign))

    def DeleteCampaign(
        self, request: pb.DeleteCampaignRequest, context: grpc.ServicerContext
    ) -> pb.DeleteCampaignResponse:
        commands.delete_campaign(request.id)
        return pb.DeleteCampaignResponse()

    def CancelCampaign(
        self, request: pb.CancelCampaignRequest, context: grpc.ServicerContext
    ) -> pb.CancelCampaignResponse:
        campaign = commands.cancel_campaign(
            request.id, request.request_id, convert.fingerprint(request)
        )
        return pb.CancelCampaignResponse(campaign=convert.campaign_to_pb(campaign))

    def ScheduleCampaign(
        self, request: pb.ScheduleCampaignRequest, context: grpc.ServicerContext
    ) -> pb.ScheduleCampaignResponse:
        campaign = commands.schedule_campaign(
            request.id,
            convert.optional_timestamp(request, "scheduled_at"),
            request.request_id,
            convert.fingerprint(request),
            self.dispatcher,
        )
        return pb.ScheduleCampaignResponse(campaign=convert.campaign_to_pb(campaign))

    def SendCampaignNow(
        self, request: pb.SendCampaignNowRequest, context: grpc.ServicerContext
    ) -> pb.SendCampaignNowResponse:
        campaign = commands.send_campaign_now(
            request.id, request.request_id, convert.fingerprint(request), self.dispatcher
        )
        return pb.SendCampaignNowResponse(campaign=convert.campaign_to_pb(campaign))

    def GetCampaignStats(
        self, request: pb.GetCampaignStatsRequest, context: grpc.ServicerContext
    ) -> pb.GetCampaignStatsResponse:
        return pb.GetCampaignStatsResponse(stats=convert.stats_to_pb(read_stats(request.id)))

    def WatchCampaignStats(
        self, request: pb.WatchCampaignStatsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchCampaignStatsResponse]:
        stats = read_stats(request.id)
        sub = self.hub.subscribe(request.id, stats)
        # Frees this thread the moment the caller hangs up, instead of at the next change.
        context.add_callback(sub.close)
        try:
            while True:
                final = is_final(Status(stats.status))
                yield pb.WatchCampaignStatsResponse(stats=convert.stats_to_pb(stats), final=final)
                if final:
                    return
                nxt = sub.next()
                if nxt is None:
                    return
                stats = nxt
        finally:
            sub.close()
