"""End to end: authz's spans continue the trace that reaches it through Envoy.

A client sends `traceparent`; Envoy, which has no tracer of its own here, forwards it unchanged
(to the upstream, and to authz in the CheckRequest, as `allowed_headers` lets it). authz exports
over OTLP/HTTP, protobuf bodies, to a receiver in this test: a `check` span with the same trace
id whose parent is that span id, carrying the decision and no identity. Spans still queued when
authz gets SIGTERM are exported before it exits.
"""

import http.server
import secrets
import threading

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from stack import DOMAIN, Stack, free_port, wait_until

SUBJECT = "110169484474386276334"  # the stand-in's default `sub`


def attributes(key_values) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in key_values}


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest
    (protobuf); keeps every span with its resource's attributes."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self.spans: list[tuple[dict, trace_pb2.Span]] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.content_types.append(self.headers.get("content-type"))
                    for resource_spans in export.resource_spans:
                        resource = attributes(resource_spans.resource.attributes)
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend((resource, span) for span in scope_spans.spans)
                payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str) -> list[trace_pb2.Span]:
        with self.lock:
            return [span for _, span in self.spans if span.trace_id.hex() == trace_id]

    def all(self) -> list[tuple[dict, trace_pb2.Span]]:
        with self.lock:
            return list(self.spans)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def traced(tmp_path):
    """A stack whose authz exports to a fresh receiver; one per test (the second stops authz)."""
    receiver = OtlpReceiver()
    stack = None
    try:
        stack = Stack(tmp_path, extra_config=f'[tracing]\notlp_endpoint = "{receiver.url}"\n')
        yield stack, receiver
    finally:
        if stack:
            stack.close()
        receiver.close()


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def through_envoy(stack, token: str, traceparent: str) -> dict:
    """One allowed request; returns the headers the upstream received from Envoy."""
    response = stack.envoy.request(token=token, headers={"traceparent": traceparent,
                                                         "tracestate": "client=1"})
    assert response.status_code == 200, response.text
    return dict(response.json()["headers"])


def assert_names_nobody(receiver: OtlpReceiver, token: str):
    text = "".join(f"{resource}{span}" for resource, span in receiver.all())
    for secret in (token, f"ada@{DOMAIN}", SUBJECT):
        assert secret not in text


def test_the_check_span_continues_the_trace_envoy_forwarded(traced):
    stack, receiver = traced
    token = stack.standin.id_token()
    trace_id, parent_id = new_ids()
    traceparent = f"00-{trace_id}-{parent_id}-01"

    upstream = through_envoy(stack, token, traceparent)
    # What Envoy sent on, to the upstream and in the CheckRequest alike: the client's context.
    assert upstream["traceparent"] == traceparent

    # The batch processor exports every few seconds.
    def both_spans():
        names = {span.name for span in receiver.trace(trace_id)}
        return {"check", "verify_token"} <= names

    wait_until(both_spans, timeout=20, what="authz's spans at the receiver")
    spans = receiver.trace(trace_id)
    [check] = [span for span in spans if span.name == "check"]
    assert check.parent_span_id.hex() == parent_id
    assert check.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert check.trace_state == "client=1"
    facts = attributes(check.attributes)
    assert facts["authz.decision"] == "allow"
    assert facts["authz.reason"] == "allowed"
    assert facts["authz.policy"] == "default"
    assert facts["authz.cache"] == "miss"
    assert facts["authz.request_id"] == upstream["x-request-id"]
    [verify] = [span for span in spans if span.name == "verify_token"]
    assert verify.parent_span_id == check.span_id
    resource = next(resource for resource, span in receiver.all() if span.name == "check")
    assert resource["service.name"] == "authz"
    assert set(receiver.content_types) == {"application/x-protobuf"}
    assert_names_nobody(receiver, token)


def test_queued_spans_are_exported_at_shutdown_and_unsampled_traces_are_not(traced):
    stack, receiver = traced
    token = stack.standin.id_token()
    sampled, unsampled = new_ids(), new_ids()
    through_envoy(stack, token, f"00-{sampled[0]}-{sampled[1]}-01")
    through_envoy(stack, token, f"00-{unsampled[0]}-{unsampled[1]}-00")
    # A malformed one neither fails the request nor joins a trace: authz starts a new one.
    malformed = through_envoy(stack, token, "00-not-a-trace-01")

    assert stack.authz.process.stop() == 0
    # No waiting: what was queued went out before the process ended.
    [check] = [span for span in receiver.trace(sampled[0]) if span.name == "check"]
    assert check.parent_span_id.hex() == sampled[1]
    assert receiver.trace(unsampled[0]) == []
    [new_trace] = [span for _, span in receiver.all() if span.name == "check" and
                   attributes(span.attributes)["authz.request_id"] == malformed["x-request-id"]]
    assert new_trace.parent_span_id == b""
    assert new_trace.trace_id.hex() not in (sampled[0], unsampled[0])
    assert_names_nobody(receiver, token)
