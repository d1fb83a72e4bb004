"""Runs moto's server for the tests, with DynamoDB requests serialized.

moto's threaded server applies DynamoDB requests concurrently without a lock,
so two concurrent conditional writes or TransactWriteItems calls on the same
item can both pass their conditions. Real DynamoDB never lets that happen
(one of them fails its condition or is cancelled with TransactionConflict),
and Hookline's exactly-once guarantee relies on it. This launcher wraps
moto's WSGI app in one lock for DynamoDB calls only, so SQS long polls still
run concurrently. Everything else is moto as published.

Usage: python moto_server.py HOST PORT
"""

import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

_dynamodb = threading.Lock()


def serialized_dynamodb(app):
    def wrapped(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with _dynamodb:
                # Materialise the body inside the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        host,
        port,
        serialized_dynamodb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
