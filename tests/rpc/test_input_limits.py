"""Server limits on hostile input, over a real channel: oversized requests, Jinja2 templates
that try to read files, reach Python internals, loop or grow without end, CEL expressions
whose evaluation would stall the server, and user attributes too big or not storable."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import email_message_pb2, user_pb2
from campaigns.v1 import email_message_service_pb2 as epb
from server import config
from tests.support.helpers import details, make_edition, violated_fields


def _fails(call: Any, request: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, **kwargs)
    return info.value


def _description(error: grpc.RpcError) -> str:
    (violation,) = details(error)["BadRequest"].field_violations
    return str(violation.description)


# --- request size ----------------------------------------------------------------------------


def test_a_request_over_the_message_limit_is_resource_exhausted(campaigns, settings, org_id):
    name = "x" * (settings.max_message_bytes + 1)
    error = _fails(
        campaigns.CreateCampaign,
        cpb.CreateCampaignRequest(organization_id=org_id, name=name),
        timeout=30,
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Refused by the transport, before any handler: the next call is served as usual.
    missing = _fails(campaigns.GetCampaign, cpb.GetCampaignRequest(id=2**62), timeout=5)
    assert missing.code() == grpc.StatusCode.NOT_FOUND


# --- Jinja2 ----------------------------------------------------------------------------------


def _sms(messages: Any, body: str) -> Any:
    return messages.PreviewSmsMessage(epb.PreviewSmsMessageRequest(body=body), timeout=30)


def _sms_refused(messages: Any, body: str) -> str:
    error = _fails(messages.PreviewSmsMessage, epb.PreviewSmsMessageRequest(body=body), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert violated_fields(error) == {"body"}
    return _description(error)


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ range.__self__ }}",
    ],
)
def test_templates_cannot_reach_python_internals(messages, body):
    try:
        text = _sms(messages, body).text
    except grpc.RpcError as error:  # the sandbox may also refuse outright
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    assert "class" not in text and "object" not in text and "module" not in text


@pytest.mark.parametrize(
    "body",
    [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as p %}",
        "{% from '/etc/passwd' import x %}",
        "{% extends '/etc/passwd' %}",
    ],
)
def test_templates_cannot_read_files(messages, body):
    assert "templates cannot read other files" in _sms_refused(messages, body)


def test_an_email_template_that_reads_files_is_refused_when_saved(audience, messages, org_id):
    edition = make_edition(audience, org_id)
    message = email_message_pb2.EmailMessage(
        organization_id=org_id,
        edition_id=edition.id,
        type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
        subject="Hi",
        from_email="news@festival.example",
        html_body="{% include '/etc/passwd' %}",
    )
    error = _fails(
        messages.CreateEmailMessage, epb.CreateEmailMessageRequest(email_message=message)
    )
    assert violated_fields(error) == {"html_body"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "range()"),
        ("{{ 'x' * 10**9 }}", "repetition"),
        ("{{ 9 ** 999999 }}", "power"),
        ("{{ 'x'|center(10**9) }}", "center"),
        ("{{ range(5)|batch(10**9, 'x')|list }}", "batch"),
        ("{{ ('x' * 1000000)|replace('x', 'yyyyyyy') }}", "replace"),
        ("{{ range(10000)|join('x' * 1000) }}", "join"),
        ("{{ '%0999999999d'|format(1) }}", "format"),
        ("{% set a = 'x' * 1000000 %}{% set b = a ~ a %}{{ b ~ b }}", "concatenation"),
        ("{% for a in range(2000) %}{{ 'x' * 2000 }}{% endfor %}", "rendered text"),
        ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "RecursionError"),
        ("{% set ns = namespace(s='x') %}{{ ns.s }}", "'namespace' is undefined"),
        ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    ],
)
def test_templates_that_would_grow_without_bound_are_refused_quickly(messages, body, says):
    started = time.monotonic()
    assert says in _sms_refused(messages, body)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "body",
    [
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% endif %}{% endmacro %}{{ m(40) }}",
        "{% for x in range(10) recursive %}{% if loop.depth < 12 %}{{ loop(range(10)) }}"
        "{% endif %}{% endfor %}",
    ],
)
def test_a_render_stops_at_its_time_limit(messages, monkeypatch, body):
    monkeypatch.setattr(config, "MAX_RENDER_SECONDS", 0.5)
    started = time.monotonic()
    assert "took longer than 0.5 s" in _sms_refused(messages, body)
    assert time.monotonic() - started < 5


def test_ordinary_templates_still_render(messages):
    body = (
        "{% for t in ['a', 'b'] %}{{ loop.index }}{{ t|upper ~ '!' }}{% endfor %} "
        "{{ 3 * 4 }} {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ '%s-%d'|format('x', 3) }} "
        "{{ range(3)|join(',') }} {{ 'a b'|replace(' ', '_') }}"
    )
    assert _sms(messages, body).text == "1A!2B! 12 1024 abab x-3 0,1,2 a_b"


# --- CEL -------------------------------------------------------------------------------------


def _validation_error(audience: Any, expression: str) -> str:
    got = audience.ValidateSegmentExpression(
        apb.ValidateSegmentExpressionRequest(expression=expression), timeout=30
    )
    assert not got.valid
    return str(got.error)


LONG_LIST = "[" + ",".join(["1"] * 1800) + "]"


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("x" * 4001, "at most 4000 characters"),
        ("(" * 40 + "1" + ")" * 40, "nests brackets more than 32 deep"),
        ("[1].map(a, [1].map(b, [1].map(c, a)))", "inside another macro"),
        ("[1].exists(a, [2].all(b, a == b))", "inside another macro"),
        (" && ".join(["[1].exists(a, a == 1)"] * 5), "at most 4 "),
        ("user.first_name == 'a\x00'", "NUL"),
    ],
)
def test_expressions_of_costly_shapes_are_refused(audience, expression, says):
    assert says in _validation_error(audience, expression)


def _import(audience: Any, org_id: int, users: list[user_pb2.User]) -> apb.ImportUsersResponse:
    return audience.ImportUsers(iter([apb.ImportUsersRequest(organization_id=org_id, users=users)]))


def test_a_costly_preview_is_cut_off_without_stalling_the_server(audience, monkeypatch, org_id):
    """One map over a long literal list passes the shape rules but rebuilds its result at
    every step (seconds of native code holding the GIL): the preview runs in a child process
    and is killed at the deadline, while the server keeps answering."""
    monkeypatch.setattr(config, "PREVIEW_EVAL_SECONDS", 1.0)
    _import(audience, org_id, [user_pb2.User(external_id="u1")])
    body = "[" + ",".join(["a"] * 30) + "]"
    expression = f"size({LONG_LIST}.map(a, {body})) > 0"
    result: dict[str, Any] = {}

    def preview() -> None:
        started = time.monotonic()
        try:
            audience.PreviewSegment(
                apb.PreviewSegmentRequest(organization_id=org_id, expression=expression), timeout=60
            )
        except grpc.RpcError as error:
            result["error"] = error
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=preview)
    thread.start()
    time.sleep(0.3)
    answered = 0
    while thread.is_alive():  # other calls are answered promptly meanwhile
        started = time.monotonic()
        audience.ListEditions(apb.ListEditionsRequest(organization_id=org_id), timeout=5)
        assert time.monotonic() - started < 1.0  # in-process, this call waited seconds
        answered += 1
        time.sleep(0.1)
    thread.join()
    assert answered >= 3
    error = result["error"]
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "took longer than 1.0 s" in error.details()
    assert result["seconds"] < 10
    # The killed child is replaced: the next preview works.
    got = audience.PreviewSegment(
        apb.PreviewSegmentRequest(organization_id=org_id, expression="[1, 2].exists(a, a == 2)"),
        timeout=30,
    )
    assert got.count == 1


# --- user attributes -------------------------------------------------------------------------


def _attributes_rejection(audience: Any, org_id: int, attributes: dict[str, Any]) -> str:
    user = user_pb2.User(external_id="u1")
    user.attributes.update(attributes)
    got = _import(audience, org_id, [user, user_pb2.User(external_id="u2")])
    assert (got.created, got.rejected) == (1, 1)  # the bad row alone is refused
    (rejection,) = got.rejections
    assert rejection.field == "attributes"
    return str(rejection.reason)


@pytest.mark.parametrize(
    ("attributes", "says"),
    [
        (
            {"blob": "x" * config.MAX_ATTRIBUTES_BYTES},
            f"at most {config.MAX_ATTRIBUTES_BYTES} bytes",
        ),
        ({"tags": list(range(5000))}, "bytes as JSON"),
        ({"score": float("inf")}, "finite"),
        ({"nested": {"deeper": [float("nan")]}}, "finite"),
        ({"k\x00": 1}, "NUL"),
        ({"k": "v\x00"}, "NUL"),
    ],
)
def test_attributes_that_cannot_be_stored_or_are_too_big_reject_the_row(
    audience, org_id, attributes, says
):
    assert says in _attributes_rejection(audience, org_id, attributes)


# --- bytes that are not a valid request --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ids=["invalid-utf8", "garbage"],
    argvalues=[
        bytes([0x22, 2, 0xFF, 0xFE]),  # field 4 (name, a string) holding invalid UTF-8
        b"\x0a\x05hello" + b"\xff" * 10,  # truncated garbage
    ],
)
def test_undecodable_request_bytes_are_invalid_argument(channel, raw):
    call = channel.unary_unary(
        "/campaigns.v1.CampaignService/CreateCampaign",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    error = _fails(call, raw, timeout=5)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_undecodable_message_in_a_client_stream_is_invalid_argument(channel):
    call = channel.stream_unary(
        "/campaigns.v1.AudienceService/ImportUsers",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        call(iter([b"\x0a\x05hello" + b"\xff" * 10]), timeout=5)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in (error.details() or "")
    else:
        pytest.fail("an undecodable stream message was accepted")
