"""AudienceService: editions, users and segments. Parse, call the domain, convert."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from campaigns.v1 import audience_service_pb2 as pb
from campaigns.v1 import audience_service_pb2_grpc as pb_grpc
from campaigns.v1 import edition_pb2, user_pb2
from server.audience import editions, imports, users
from server.audience.editions import EditionInput
from server.audience.imports import UserInput
from server.audience.segments import service as segment_service
from server.audience.segments.engine import Problem
from server.audience.segments.service import SegmentInput
from server.audience.users import UserFilter
from server.rpc import convert
from server.store.pagination import PageRequest


def _input(e: edition_pb2.Edition) -> EditionInput:
    return EditionInput(
        organization_id=e.organization_id,
        name=e.name,
        timezone=e.timezone,
        default_country_code=e.default_country_code,
        default_language=e.default_language,
        start_date=e.start_date,
        end_date=e.end_date,
    )


def _user(u: user_pb2.User) -> UserInput:
    return UserInput(
        external_id=u.external_id,
        email=u.email,
        phone=u.phone,
        first_name=u.first_name,
        last_name=u.last_name,
        language=u.language,
        attributes=convert.struct_to_dict(u.attributes),
        email_consent=u.email_consent,
        sms_consent=u.sms_consent,
        email_unsubscribed=u.email_unsubscribed,
        sms_unsubscribed=u.sms_unsubscribed,
        edition_ids=tuple(u.edition_ids),
    )


def _batches(
    requests: Iterator[pb.ImportUsersRequest],
) -> Iterator[tuple[int, int, list[UserInput]]]:
    for request in requests:
        yield request.organization_id, request.edition_id, [_user(u) for u in request.users]


class AudienceServicer(pb_grpc.AudienceServiceServicer):
    def CreateEdition(
        self, request: pb.CreateEditionRequest, context: grpc.ServicerContext
    ) -> pb.CreateEditionResponse:
        edition = editions.create_edition(_input(request.edition))
        return pb.CreateEditionResponse(edition=convert.edition_to_pb(edition))

    def GetEdition(
        self, request: pb.GetEditionRequest, context: grpc.ServicerContext
    ) -> pb.GetEditionResponse:
        return pb.GetEditionResponse(
            edition=convert.edition_to_pb(editions.get_edition(request.id))
        )

    def ListEditions(
        self, request: pb.ListEditionsRequest, context: grpc.ServicerContext
    ) -> pb.ListEditionsResponse:
        page = editions.list_editions(
            request.organization_id, PageRequest(request.page, request.page_size)
        )
        return pb.ListEditionsResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[convert.edition_to_pb(e) for e in page.results],
        )

    def UpdateEdition(
        self, request: pb.UpdateEditionRequest, context: grpc.ServicerContext
    ) -> pb.UpdateEditionResponse:
        edition = editions.update_edition(
            request.id, _input(request.edition), list(request.update_mask.paths)
        )
        return pb.UpdateEditionResponse(edition=convert.edition_to_pb(edition))

    def ImportUsers(
        self, request_iterator: Iterator[pb.ImportUsersRequest], context: grpc.ServicerContext
    ) -> pb.ImportUsersResponse:
        result = imports.import_users(_batches(request_iterator))
        return pb.ImportUsersResponse(
            created=result.created,
            updated=result.updated,
            rejected=result.rejected,
            rejections=[
                pb.ImportRejection(
                    index=r.index, external_id=r.external_id, field=r.field, reason=r.reason
                )
                for r in result.rejections
            ],
        )

    def GetUser(
        self, request: pb.GetUserRequest, context: grpc.ServicerContext
    ) -> pb.GetUserResponse:
        user = users.get_user(request.id)
        return pb.GetUserResponse(
            user=convert.user_to_pb(user, users.edition_ids([user.id])[user.id])
        )

    def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.ServicerContext
    ) -> pb.ListUsersResponse:
        flt = UserFilter(
            organization_id=request.organization_id,
            edition_id=request.edition_id,
            email_consent=request.email_consent if request.HasField("email_consent") else None,
            sms_consent=request.sms_consent if request.HasField("sms_consent") else None,
        )
        page = users.list_users(flt, PageRequest(request.page, request.page_size))
        memberships = users.edition_ids([u.id for u in page.results])
        return pb.ListUsersResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[convert.user_to_pb(u, memberships[u.id]) for u in page.results],
        )

    def DeleteUser(
        self, request: pb.DeleteUserRequest, context: grpc.ServicerContext
    ) -> pb.DeleteUserResponse:
        users.delete_user(request.id)
        return pb.DeleteUserResponse()

    def CreateSegment(
        self, request: pb.CreateSegmentRequest, context: grpc.ServicerContext
    ) -> pb.CreateSegmentResponse:
        s = request.segment
        segment = segment_service.create_segment(
            SegmentInput(s.organization_id, s.edition_id, s.name, s.expression)
        )
        return pb.CreateSegmentResponse(segment=convert.segment_to_pb(segment))

    def GetSegment(
        self, request: pb.GetSegmentRequest, context: grpc.ServicerContext
    ) -> pb.GetSegmentResponse:
        return pb.GetSegmentResponse(
            segment=convert.segment_to_pb(segment_service.get_segment(request.id))
        )

    def ListSegments(
        self, request: pb.ListSegmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListSegmentsResponse:
        page = segment_service.list_segments(
            request.organization_id,
            request.edition_id,
            PageRequest(request.page, request.page_size),
        )
        return pb.ListSegmentsResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[convert.segment_to_pb(s) for s in page.results],
        )

    def UpdateSegment(
        self, request: pb.UpdateSegmentRequest, context: grpc.ServicerContext
    ) -> pb.UpdateSegmentResponse:
        s = request.segment
        segment = segment_service.update_segment(
            request.id,
            SegmentInput(s.organization_id, s.edition_id, s.name, s.expression),
            list(request.update_mask.paths),
        )
        return pb.UpdateSegmentResponse(segment=convert.segment_to_pb(segment))

    def DeleteSegment(
        self, request: pb.DeleteSegmentRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSegmentResponse:
        segment_service.delete_segment(request.id)
        return pb.DeleteSegmentResponse()

    def ValidateSegmentExpression(
        self, request: pb.ValidateSegmentExpressionRequest, context: grpc.ServicerContext
    ) -> pb.ValidateSegmentExpressionResponse:
        checked = segment_service.validate_expression(request.expression)
        if isinstance(checked, Problem):
            return pb.ValidateSegmentExpressionResponse(
                error=checked.message, line=checked.line, column=checked.column
            )
        return pb.ValidateSegmentExpressionResponse(valid=True, pushed_down=checked.pushed_down)

    def PreviewSegment(
        self, request: pb.PreviewSegmentRequest, context: grpc.ServicerContext
    ) -> pb.PreviewSegmentResponse:
        data = SegmentInput(request.organization_id, request.edition_id, "", request.expression)
        result = segment_service.preview(request.segment_id, data, request.sample_size)
        memberships = users.edition_ids([u.id for u in result.sample])
        return pb.PreviewSegmentResponse(
            count=result.count,
            evaluated=result.evaluated,
            sample=[convert.user_to_pb(u, memberships[u.id]) for u in result.sample],
        )
