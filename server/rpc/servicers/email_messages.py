"""EmailMessageService: parse, call the domain, convert."""

from __future__ import annotations

import grpc

from campaigns.v1 import email_message_pb2
from campaigns.v1 import email_message_service_pb2 as pb
from campaigns.v1 import email_message_service_pb2_grpc as pb_grpc
from server.content import email_messages
from server.content.email_messages import EmailMessageInput
from server.rpc import convert
from server.rpc.enums import EnumNames
from server.store.pagination import PageRequest

ENCODINGS = EnumNames(pb.SmsEncoding)


def _input(m: email_message_pb2.EmailMessage) -> EmailMessageInput:
    return EmailMessageInput(
        organization_id=m.organization_id,
        edition_id=m.edition_id,
        type=convert.message_type(m.type),
        subject=m.subject,
        from_name=m.from_name,
        from_email=m.from_email,
        reply_to=m.reply_to,
        html_body=m.html_body,
        text_body=m.text_body,
    )


class EmailMessageServicer(pb_grpc.EmailMessageServiceServicer):
    def CreateEmailMessage(
        self, request: pb.CreateEmailMessageRequest, context: grpc.ServicerContext
    ) -> pb.CreateEmailMessageResponse:
        message = email_messages.create_email_message(_input(request.email_message))
        return pb.CreateEmailMessageResponse(email_message=convert.email_message_to_pb(message))

    def GetEmailMessage(
        self, request: pb.GetEmailMessageRequest, context: grpc.ServicerContext
    ) -> pb.GetEmailMessageResponse:
        message = email_messages.get_email_message(request.id)
        return pb.GetEmailMessageResponse(email_message=convert.email_message_to_pb(message))

    def ListEmailMessages(
        self, request: pb.ListEmailMessagesRequest, context: grpc.ServicerContext
    ) -> pb.ListEmailMessagesResponse:
        page = email_messages.list_email_messages(
            request.organization_id,
            request.edition_id,
            convert.message_type(request.type),
            PageRequest(request.page, request.page_size),
        )
        return pb.ListEmailMessagesResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[convert.email_message_to_pb(m) for m in page.results],
        )

    def UpdateEmailMessage(
        self, request: pb.UpdateEmailMessageRequest, context: grpc.ServicerContext
    ) -> pb.UpdateEmailMessageResponse:
        message = email_messages.update_email_message(
            request.id, _input(request.email_message), list(request.update_mask.paths)
        )
        return pb.UpdateEmailMessageResponse(email_message=convert.email_message_to_pb(message))

    def DeleteEmailMessage(
        self, request: pb.DeleteEmailMessageRequest, context: grpc.ServicerContext
    ) -> pb.DeleteEmailMessageResponse:
        email_messages.delete_email_message(request.id)
        return pb.DeleteEmailMessageResponse()

    def PreviewEmailMessage(
        self, request: pb.PreviewEmailMessageRequest, context: grpc.ServicerContext
    ) -> pb.PreviewEmailMessageResponse:
        r = email_messages.preview_email(request.id, request.user_id)
        return pb.PreviewEmailMessageResponse(
            subject=r.subject,
            html_body=r.html_body,
            text_body=r.text_body,
            sender=r.sender,
            reply_to=r.reply_to,
            to=r.to,
        )

    def PreviewSmsMessage(
        self, request: pb.PreviewSmsMessageRequest, context: grpc.ServicerContext
    ) -> pb.PreviewSmsMessageResponse:
        text, sms_cost = email_messages.preview_sms(
            request.body, request.user_id, request.edition_id
        )
        return pb.PreviewSmsMessageResponse(
            text=text,
            encoding=ENCODINGS.to_pb[sms_cost.encoding],
            segments=sms_cost.segments,
            length=sms_cost.length,
        )
