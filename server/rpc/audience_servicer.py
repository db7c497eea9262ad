"""AudienceService: editions for now. Parse, call the domain, convert."""

from __future__ import annotations

import grpc

from campaigns.v1 import audience_service_pb2 as pb
from campaigns.v1 import audience_service_pb2_grpc as pb_grpc
from campaigns.v1 import edition_pb2
from server import editions
from server.editions import EditionInput
from server.listing import PageRequest
from server.rpc import convert


def _input(e: edition_pb2.Edition) -> EditionInput:
    return EditionInput(
        organization_id=e.organization_id, name=e.name, timezone=e.timezone,
        default_country_code=e.default_country_code, default_language=e.default_language,
        start_date=e.start_date, end_date=e.end_date,
    )


class AudienceServicer(pb_grpc.AudienceServiceServicer):
    def CreateEdition(self, request: pb.CreateEditionRequest, context: grpc.ServicerContext
                      ) -> pb.CreateEditionResponse:
        edition = editions.create_edition(_input(request.edition))
        return pb.CreateEditionResponse(edition=convert.edition_to_pb(edition))

    def GetEdition(self, request: pb.GetEditionRequest, context: grpc.ServicerContext
                   ) -> pb.GetEditionResponse:
        return pb.GetEditionResponse(edition=convert.edition_to_pb(editions.get_edition(request.id)))

    def ListEditions(self, request: pb.ListEditionsRequest, context: grpc.ServicerContext
                     ) -> pb.ListEditionsResponse:
        page = editions.list_editions(
            request.organization_id, PageRequest(request.page, request.page_size)
        )
        return pb.ListEditionsResponse(
            count=page.count, next_page=page.next_page, previous_page=page.previous_page,
            results=[convert.edition_to_pb(e) for e in page.results],
        )

    def UpdateEdition(self, request: pb.UpdateEditionRequest, context: grpc.ServicerContext
                      ) -> pb.UpdateEditionResponse:
        edition = editions.update_edition(
            request.id, _input(request.edition), list(request.update_mask.paths)
        )
        return pb.UpdateEditionResponse(edition=convert.edition_to_pb(edition))
