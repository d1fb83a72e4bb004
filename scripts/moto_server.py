"""Runs moto's server for the tests, as AWS behaves where Hookline relies on it.

1. DynamoDB requests are serialized.

moto's threaded server applies DynamoDB requests concurrently without a lock,
so two concurrent conditional writes or TransactWriteItems calls on the same
item can both pass their conditions. Real DynamoDB never lets that happen
(one of them fails its condition or is cancelled with TransactionConflict),
and Hookline's exactly-once guarantee relies on it. This launcher wraps
moto's WSGI app in one lock for DynamoDB calls only, so SQS long polls still
run concurrently.

2. FIFO deduplication lasts 5 minutes. SQS drops a FIFO message whose
deduplication id it accepted in the last 5 minutes, whether or not that
first message is still in the queue, and answers success. moto only drops
it while a message with the same id is still in the queue, so a copy sent
after the original was deleted would arrive on moto and vanish on AWS. The
queue model here remembers every accepted deduplication id for the window.

3. SendMessageBatch keeps each entry's MessageSystemAttributes. moto keeps
them for SendMessage only, so the `AWSTraceHeader` the ingress sends with
its batches (the trace a worker continues) would be lost on moto where AWS
keeps it.

4. A received message is hidden from every other receive. moto checks a
message's visibility and then marks it received without a lock, so two
concurrent ReceiveMessage calls on one queue can both take the same message
(measured here: 2 of 600 messages under load, with 8 receivers). SQS hides
a message as it hands it out, and two concurrent replays rely on that to
move each message once. Each receive pass here runs under its queue's lock;
a long poll waits outside it. And a deleted message is gone: moto rebuilds
a queue's message list on each delete without a lock, so two concurrent
deletes on one queue could undo each other (measured: 10 to 20 of 1,000 DLQ
messages left after a replay whose deletes all succeeded); deletes here
take the queue's lock too.

Besides these, one change of speed, not of behaviour. moto checks each
message it hands out against the queue's retention period by computing
every attribute of the queue (counting all its messages), and every send
does the same once; each count reads the clock through datetime for each
message. One ReceiveMessage on a queue of 2,000 messages took 2 s and a
SendMessageBatch 0.9 s. Here the retention period is read directly, with
the same rule, and SQS's clock reads are time.time(), so a test of a
2,000-message DLQ runs in seconds, not in many minutes.

Everything else is moto as published.

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

DEDUPLICATION_WINDOW_MS = 5 * 60 * 1000


def fifo_deduplication_as_sqs():
    from moto.sqs.models import Queue

    original = Queue.add_message
    guard = threading.Lock()

    def add_message(self, message):
        dedup_id = getattr(message, "deduplication_id", None)
        if self.fifo_queue and dedup_id:
            now = message.sent_timestamp
            with guard:
                seen = self.__dict__.setdefault("_dedup_accepted", {})
                first = seen.get(dedup_id)
                if first is not None and now - first < DEDUPLICATION_WINDOW_MS:
                    return  # accepted earlier: dropped, as SQS does
                seen[dedup_id] = now
                for key in [k for k, t in seen.items() if now - t >= DEDUPLICATION_WINDOW_MS]:
                    del seen[key]
        return original(self, message)

    Queue.add_message = add_message


def batch_system_attributes_as_sqs():
    """SendMessageBatch keeps each entry's MessageSystemAttributes (the
    AWSTraceHeader a trace continues through), as SQS does; moto passes them
    on for SendMessage only. The batch sends its entries one by one, in
    order, on this thread: each send takes the next entry's."""
    from moto.sqs.models import SQSBackend

    pending = threading.local()
    original_batch = SQSBackend.send_message_batch
    original_send = SQSBackend.send_message

    def send_message_batch(self, queue_name, entries):
        pending.system = [e.get("MessageSystemAttributes") for e in entries.values()]
        try:
            return original_batch(self, queue_name, entries)
        finally:
            pending.system = None

    def send_message(self, *args, **kwargs):
        queued = getattr(pending, "system", None)
        if queued:
            system = queued.pop(0)
            if system and not kwargs.get("system_attributes"):
                kwargs["system_attributes"] = system
        return original_send(self, *args, **kwargs)

    SQSBackend.send_message_batch = send_message_batch
    SQSBackend.send_message = send_message


def receive_as_sqs():
    """A message one receive took is hidden from every concurrent one, as
    SQS does: each pass over a queue runs under that queue's lock, and a long
    poll waits for new messages outside it, as moto's own loop does."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    original = SQSBackend.receive_message
    guard = threading.Lock()

    def receive_message(
        self, queue_name, count, wait_seconds_timeout, visibility_timeout,
        message_attribute_names=None,
    ):
        queue = self.get_queue(queue_name)
        with guard:
            lock = queue.__dict__.setdefault("_receive_lock", threading.Lock())
        polling_end = unix_time() + wait_seconds_timeout
        while True:
            with lock:
                result = original(
                    self, queue_name, count, 0, visibility_timeout,
                    message_attribute_names,
                )
            if result or not wait_seconds_timeout or unix_time() > polling_end:
                return result
            queue.wait_for_messages(1)

    SQSBackend.receive_message = receive_message

    # A delete rebuilds the queue's message list and assigns it: two at once
    # (two replay loops, a coalescer's batches) lose one of their deletes,
    # and receives see the list half rebuilt. SQS deletes each message it is
    # asked to; here deletes take the same lock as receive passes.
    from moto.sqs.models import Queue

    original_delete = Queue.delete_message

    def delete_message(self, receipt_handle):
        with guard:
            lock = self.__dict__.setdefault("_receive_lock", threading.Lock())
        with lock:
            return original_delete(self, receipt_handle)

    Queue.delete_message = delete_message


def serialized_dynamodb(app):
    def wrapped(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with _dynamodb:
                # Materialise the body inside the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def sqs_at_speed():
    """The same retention rule as moto's, reading the period directly
    instead of computing every queue attribute per message; the same clock,
    read without datetime arithmetic."""
    import time

    import moto.sqs.models as sqs_models
    from moto.sqs.models import SQSBackend

    def unix_time(dt=None):
        return time.time() if dt is None else original_unix_time(dt)

    def unix_time_millis(dt=None):
        return unix_time(dt) * 1000.0

    original_unix_time = sqs_models.unix_time
    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis

    def is_message_valid_based_on_retention_period(self, queue_name, message):
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    fifo_deduplication_as_sqs()
    batch_system_attributes_as_sqs()
    receive_as_sqs()
    sqs_at_speed()
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
