"""An OTLP/HTTP trace receiver for the tests: decodes each export with
OpenTelemetry's published protobuf definitions (the `opentelemetry-proto`
package), never with a parser of Hookline's own.

  python otlp_receiver.py PORT_FILE

Listens on a free loopback port, writes it to PORT_FILE, then serves:
  POST /v1/traces   an ExportTraceServiceRequest (protobuf, optionally gzip)
  GET  /spans       every span received so far, as JSON
  GET  /exports     how many export requests arrived
"""

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

_lock = threading.Lock()
_spans = []
_exports = [0]


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def span_json(resource, scope, s):
    return {
        "service": resource.get("service.name"),
        "resource": resource,
        "scope": scope.name,
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "parent_span_id": s.parent_span_id.hex(),
        "name": s.name,
        "kind": Span.SpanKind.Name(s.kind),
        "start_unix_nano": s.start_time_unix_nano,
        "end_unix_nano": s.end_time_unix_nano,
        "attributes": attributes(s.attributes),
        "status": Status.StatusCode.Name(s.status.code),
        "status_message": s.status.message,
        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
        "links": [
            {"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(), "attributes": attributes(l.attributes)}
            for l in s.links
        ],
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path != "/v1/traces":
            return self.reply(404, b"", "text/plain")
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as error:  # a malformed export is the sender's bug
            return self.reply(400, str(error).encode(), "text/plain")
        received = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(span_json(resource, ss.scope, s))
        with _lock:
            _exports[0] += 1
            _spans.extend(received)
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def do_GET(self):
        with _lock:
            if self.path == "/spans":
                body = json.dumps(_spans).encode()
            elif self.path == "/exports":
                body = json.dumps(_exports[0]).encode()
            else:
                return self.reply(404, b"", "text/plain")
        self.reply(200, body, "application/json")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os

    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
