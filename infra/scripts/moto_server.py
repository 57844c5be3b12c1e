"""Starts moto's server (same arguments as `moto_server`) with one race fixed and two costs
taken out of its SQS backend (moto 5.2).

The race: DeleteMessage rebuilt the queue's message list and assigned it back, so a message
sent (or deleted) by another request thread in between was lost (or came back from the dead,
invisible until its visibility timeout). Deletion now removes the message in place, under a
lock; appends and removals of single list items are atomic in CPython.

The costs: moto reads the clock for every message of a queue on every receive, through
a datetime-based helper, and for every message it returns (or sends) it recomputes all the
queue's attributes (including the approximate counts, a pass over every message) only to read
one setting. With thousands of queued messages a ReceiveMessage took seconds, and a send grew
with the queue. The replacements compute the same values directly; behaviour is unchanged.

It also counts the requests it serves by API operation (`dynamodb:PutItem`, `sqs:SendMessageBatch`,
...), for `make bench`: `GET /_requests` answers the counts as JSON, `DELETE /_requests` resets
them. AWS bills per request, so these are the figures the cost model needs, whichever client
made the calls.
"""

import collections
import json
import sys
import threading
import time
import urllib.parse

import moto.core.utils as utils

_datetime_unix_time = utils.unix_time


def unix_time(dt=None):
    if dt is None:
        return time.time()
    return _datetime_unix_time(dt)


def unix_time_millis(dt=None):
    return unix_time(dt) * 1000.0


utils.unix_time = unix_time
utils.unix_time_millis = unix_time_millis

import moto.sqs.models as sqs_models  # noqa: E402  (patched after the helpers are replaced)

for name, fn in (("unix_time", unix_time), ("unix_time_millis", unix_time_millis)):
    if hasattr(sqs_models, name):
        setattr(sqs_models, name, fn)



def _retained(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > time.time()


sqs_models.SQSBackend.is_message_valid_based_on_retention_period = _retained

_delete_lock = threading.Lock()


def _delete_message(self, receipt_handle):
    with _delete_lock:
        if receipt_handle in self.deleted_messages:
            return
        matches = [m for m in self._messages if m.had_receipt_handle(receipt_handle)]
        if not matches:
            raise sqs_models.ReceiptHandleIsInvalid()
        for message in matches:
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            try:
                self._messages.remove(message)
            except ValueError:
                pass  # moved to the DLQ by a concurrent receive


sqs_models.Queue.delete_message = _delete_message

# SendMessage reads the queue's attributes for one setting (content-based deduplication), and
# building them counts the queue's messages three times over: sending to a queue of 100,000
# messages took a tenth of a second per message. While a message is being sent, the attributes
# hold that setting alone.
_sending = threading.local()
_all_attributes = sqs_models.Queue.attributes.fget


def _attributes(self):
    if getattr(_sending, "active", False):
        value = getattr(self, "content_based_deduplication", False)
        return {"ContentBasedDeduplication": str(value).lower()}
    return _all_attributes(self)


sqs_models.Queue.attributes = property(_attributes)
_send_message = sqs_models.SQSBackend.send_message


def _send_message_quickly(self, *args, **kwargs):
    _sending.active = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.active = False


sqs_models.SQSBackend.send_message = _send_message_quickly

from moto.moto_server import werkzeug_app  # noqa: E402

_requests = collections.Counter()
_requests_lock = threading.Lock()
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__
_SERVICES = {"DynamoDB_20120810": "dynamodb", "AmazonSQS": "sqs"}


def _operation(environ):
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target and "." in target:
        prefix, action = target.split(".", 1)
        return f"{_SERVICES.get(prefix, prefix)}:{action}"
    action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    return f"query:{action[0]}" if action else "other"


def _counted(self, environ, start_response):
    if environ.get("PATH_INFO") == "/_requests":
        with _requests_lock:
            body = json.dumps(dict(_requests)).encode()
            if environ.get("REQUEST_METHOD") == "DELETE":
                _requests.clear()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
    operation = _operation(environ)
    with _requests_lock:
        _requests[operation] += 1
    return _dispatch(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _counted

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
