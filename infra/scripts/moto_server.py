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

DynamoDB's conditional writes are atomic per item; moto's are not: two concurrent UpdateItems
could both find a condition true before either wrote, so two claims of one asset both
succeeded (and both invocations paid for its OCR). Writes (PutItem, UpdateItem, DeleteItem,
TransactWriteItems) now run one at a time, as their conditions and effects must.

It adds what moto 5.2 lacks of SQS's dead-letter redrive, with SQS's documented semantics:
- a message that the redrive policy moves to a dead-letter queue records the queue it came from
  (`DeadLetterQueueSourceArn`, returned by ReceiveMessage when asked for); a message sent to the
  dead-letter queue by SendMessage has none;
- message move tasks (StartMessageMoveTask, ListMessageMoveTasks, CancelMessageMoveTask, the
  API behind the console's "Start DLQ redrive"): the source must be a dead-letter queue of
  another queue, one task runs per source at a time; with a destination every message goes
  there, without one each goes back to the queue it came from, and a message without a source
  stays where it is and fails the task (`CouldNotDetermineMessageSource`). Whether SQS keeps a
  redriven message's id and receive count is not documented: by default the moved message is a
  new one (new id, receive count 0); `POST /_redrive?queue=ARN&keep_id=1&keep_count=1` makes
  later moves into that queue keep either or both, so the product can be tested under each.

CloudWatch's current protocol, Smithy RPC v2 CBOR (what the AWS SDKs for Rust send), is not one
moto 5.2 speaks (it answers the query protocol only): PutMetricData and GetMetricData in CBOR
are decoded here and served by moto's CloudWatch backend, their answers encoded as the protocol
says (timestamps as epoch seconds, tag 1; errors with `__type`).

It serves moto's application with waitress instead of werkzeug's development server, which
answers every request with `Connection: close`: AWS keeps HTTP/1.1 connections open, so a client
here now pays for connections as it would there (once per connection, not once per request),
and the CPU the benchmarks measure leaves out a connection per request that a client on AWS does
not pay. waitress's pool of request threads is sized for the long polls (ReceiveMessage with
WaitTimeSeconds) that hold one each.

It also counts the requests it serves by API operation (`dynamodb:PutItem`, `sqs:SendMessageBatch`,
...), for `make bench`: `GET /_requests` answers the counts as JSON, `DELETE /_requests` resets
them. AWS bills per request, so these are the figures the cost model needs, whichever client
made the calls.
"""

import collections
import io
import json
import sys
import threading
import time
import urllib.parse
import uuid

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

# --- DynamoDB: a write's condition and its effect are one step -----------------------------

import moto.dynamodb.models as dynamodb_models  # noqa: E402

_write_lock = threading.RLock()


def _serialised(method):
    def write(self, *args, **kwargs):
        with _write_lock:
            return method(self, *args, **kwargs)

    write.__name__ = method.__name__
    return write


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(
        dynamodb_models.DynamoDBBackend,
        _name,
        _serialised(getattr(dynamodb_models.DynamoDBBackend, _name)),
    )

# --- Dead-letter sources and message move tasks -------------------------------------------

SOURCE_ARN = "DeadLetterQueueSourceArn"
_receiving = threading.local()
_sources = {}  # message id -> the queue its redrive policy moved it from
_count_offsets = {}  # message id -> receives kept from before a move
_receive_message = sqs_models.SQSBackend.receive_message
_add_message = sqs_models.Queue.add_message


def _receive_recording_sources(self, queue_name, *args, **kwargs):
    _receiving.queue = self.get_queue(queue_name)
    try:
        return _receive_message(self, queue_name, *args, **kwargs)
    finally:
        _receiving.queue = None


def _add_message_recording_source(self, message):
    source = getattr(_receiving, "queue", None)
    if source is not None and source.dead_letter_queue is self:
        # Moved here by the source queue's redrive policy.
        message.system_attributes = dict(message.system_attributes or {})
        message.system_attributes[SOURCE_ARN] = source.queue_arn
        _sources[message.id] = source.queue_arn
    _add_message(self, message)


sqs_models.SQSBackend.receive_message = _receive_recording_sources
sqs_models.Queue.add_message = _add_message_recording_source

_tasks = []  # every task, newest last
_tasks_lock = threading.Lock()
_keep = {}  # destination queue ARN -> {"id": bool, "count": bool}


def _queue_by_arn(arn):
    parts = (arn or "").split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    region, account, name = parts[3], parts[4], parts[5]
    try:
        return sqs_models.sqs_backends[account][region].queues.get(name)
    except KeyError:
        return None


def _backend_of(queue):
    return sqs_models.sqs_backends[queue.account_id][queue.region]


class _MoveTask:
    def __init__(self, source, destination_arn, rate):
        self.handle = str(uuid.uuid4())
        self.source = source
        self.destination_arn = destination_arn
        self.rate = rate
        self.status = "RUNNING"
        self.failure_reason = None
        self.moved = 0
        self.to_move = 0
        self.started_ms = int(time.time() * 1000)
        self.cancel = False

    def run(self):
        queue = self.source
        waiting = [m for m in list(queue._messages) if m.visible]
        self.to_move = len(waiting)
        for message in waiting:
            if self.cancel:
                self.status = "CANCELLED"
                return
            arn = self.destination_arn or (message.system_attributes or {}).get(SOURCE_ARN)
            destination = _queue_by_arn(arn) if arn else None
            if destination is None:
                self.status = "FAILED"
                self.failure_reason = (
                    "CouldNotDetermineMessageSource" if not arn else "DestinationQueueDoesNotExist"
                )
                return
            with _delete_lock:
                if message not in queue._messages or not message.visible:
                    continue  # received or deleted meanwhile
                queue._messages.remove(message)
                queue.pending_messages.discard(message)
            attributes = dict(message.system_attributes or {})
            attributes.pop(SOURCE_ARN, None)
            _sources.pop(message.id, None)
            count = message.approximate_receive_count
            keep = _keep.get(destination.queue_arn, {})
            if keep.get("id"):
                message.system_attributes = attributes
                moved = message
                _add_message(destination, moved)
            else:
                moved = _backend_of(destination).send_message(
                    destination.name,
                    message.body,
                    message_attributes=message.message_attributes,
                    system_attributes=attributes,
                )
            # The redrive policy counts the receives in the new queue; a kept count is what
            # ReceiveMessage reports on top of those.
            moved.approximate_receive_count = 0
            if keep.get("count"):
                _count_offsets[moved.id] = count
            self.moved += 1
            if self.rate:
                time.sleep(1.0 / self.rate)
        self.status = "COMPLETED"

    def describe(self):
        d = {
            "Status": self.status,
            "SourceArn": self.source.queue_arn,
            "ApproximateNumberOfMessagesMoved": self.moved,
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        }
        if self.status == "RUNNING":
            d["TaskHandle"] = self.handle
        if self.destination_arn:
            d["DestinationArn"] = self.destination_arn
        if self.rate:
            d["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure_reason:
            d["FailureReason"] = self.failure_reason
        return d


def _json(start_response, payload, status="200 OK"):
    body = json.dumps(payload).encode()
    start_response(
        status,
        [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _sqs_error(start_response, code, message):
    return _json(
        start_response,
        {"__type": f"com.amazonaws.sqs#{code}", "message": message},
        "400 Bad Request",
    )


def _start_move_task(request, start_response):
    source = _queue_by_arn(request.get("SourceArn"))
    if source is None:
        return _sqs_error(start_response, "ResourceNotFoundException", "The resource that you specified for the SourceArn parameter doesn't exist.")
    if not _backend_of(source).list_dead_letter_source_queues(source.name):
        return _sqs_error(start_response, "InvalidParameterValue", "Source queue must be configured as a Dead Letter Queue.")
    destination_arn = request.get("DestinationArn")
    if destination_arn and _queue_by_arn(destination_arn) is None:
        return _sqs_error(start_response, "ResourceNotFoundException", "The resource that you specified for the DestinationArn parameter doesn't exist.")
    rate = request.get("MaxNumberOfMessagesPerSecond")
    with _tasks_lock:
        if any(t.source is source and t.status == "RUNNING" for t in _tasks):
            return _sqs_error(start_response, "InvalidParameterValue", "There is already a task running. Only one active task is allowed for a source queue arn at a given time.")
        task = _MoveTask(source, destination_arn, rate)
        _tasks.append(task)
    threading.Thread(target=task.run, daemon=True).start()
    return _json(start_response, {"TaskHandle": task.handle})


def _list_move_tasks(request, start_response):
    source = _queue_by_arn(request.get("SourceArn"))
    if source is None:
        return _sqs_error(start_response, "ResourceNotFoundException", "The resource that you specified for the SourceArn parameter doesn't exist.")
    limit = max(1, min(10, int(request.get("MaxResults") or 1)))
    with _tasks_lock:
        mine = [t for t in reversed(_tasks) if t.source is source][:limit]
    return _json(start_response, {"Results": [t.describe() for t in mine]})


def _cancel_move_task(request, start_response):
    handle = request.get("TaskHandle")
    with _tasks_lock:
        task = next((t for t in _tasks if t.handle == handle), None)
    if task is None or task.status != "RUNNING":
        return _sqs_error(start_response, "ResourceNotFoundException", "The task handle is not valid or the task is not running.")
    task.cancel = True
    return _json(start_response, {"ApproximateNumberOfMessagesMoved": task.moved})


_MOVE_ACTIONS = {
    "sqs:StartMessageMoveTask": _start_move_task,
    "sqs:ListMessageMoveTasks": _list_move_tasks,
    "sqs:CancelMessageMoveTask": _cancel_move_task,
}


def _with_sources(environ, start_response, dispatch):
    """Runs a ReceiveMessage and adds each message's recorded source, when asked for."""
    if not _sources and not _count_offsets:
        return dispatch(environ, start_response)
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        request = json.loads(raw or b"{}")
    except ValueError:
        request = {}
    names = set(request.get("MessageSystemAttributeNames") or []) | set(request.get("AttributeNames") or [])
    if not names & {"All", SOURCE_ARN, "ApproximateReceiveCount"}:
        return dispatch(environ, start_response)
    captured = {}

    def capture(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    body = b"".join(dispatch(environ, capture))
    try:
        payload = json.loads(body)
        for message in payload.get("Messages", []):
            attributes = message.setdefault("Attributes", {})
            source = _sources.get(message.get("MessageId"))
            if source and names & {"All", SOURCE_ARN}:
                attributes[SOURCE_ARN] = source
            offset = _count_offsets.get(message.get("MessageId"))
            if offset and "ApproximateReceiveCount" in attributes:
                attributes["ApproximateReceiveCount"] = str(int(attributes["ApproximateReceiveCount"]) + offset)
        body = json.dumps(payload).encode()
    except (ValueError, AttributeError):
        pass
    headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    start_response(captured["status"], headers)
    return [body]


from moto.moto_server import werkzeug_app  # noqa: E402

_requests = collections.Counter()
_requests_lock = threading.Lock()
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__
_SERVICES = {"DynamoDB_20120810": "dynamodb", "AmazonSQS": "sqs"}


_CBOR_PREFIX = "/service/GraniteServiceVersion20100801/operation/"


def _naive_utc(t):
    """moto's CloudWatch keeps naive UTC datetimes."""
    import datetime

    if isinstance(t, (int, float)):
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).replace(tzinfo=None)
    return t.astimezone(datetime.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _cloudwatch_cbor(environ, start_response, operation):
    import datetime

    import cbor2
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    def answer(payload, status="200 OK"):
        body = cbor2.dumps(payload, datetime_as_timestamp=True, timezone=datetime.timezone.utc)
        start_response(
            status,
            [
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    request = cbor2.loads(raw) if raw else {}
    scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=")[-1].split("/")
    region = scope[2] if len(scope) > 3 else "us-east-1"
    backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region]
    try:
        if operation == "PutMetricData":
            data = []
            for datum in request.get("MetricData", []):
                datum = dict(datum)
                if "Timestamp" in datum:
                    datum["Timestamp"] = _naive_utc(datum["Timestamp"])
                data.append(datum)
            backend.put_metric_data(request["Namespace"], data)
            return answer({})
        if operation == "GetMetricData":
            results = backend.get_metric_data(
                queries=request.get("MetricDataQueries", []),
                start_time=_naive_utc(request["StartTime"]),
                end_time=_naive_utc(request["EndTime"]),
                scan_by=request.get("ScanBy") or "TimestampDescending",
            )
            return answer(
                {
                    "MetricDataResults": [
                        {
                            "Id": r["id"],
                            "Label": r["label"],
                            "Timestamps": list(r["timestamps"]),
                            "Values": [float(v) for v in r["values"]],
                            "StatusCode": r["status_code"],
                        }
                        for r in results
                    ],
                    "Messages": [],
                }
            )
    except Exception as e:  # moto's validation errors carry a code; others are the server's
        code = getattr(e, "error_type", None) or getattr(e, "code", None) or "InternalFailure"
        return answer({"__type": f"com.amazonaws.cloudwatch#{code}", "message": str(e)}, "400 Bad Request")
    return answer(
        {"__type": "com.amazonaws.cloudwatch#UnknownOperationException", "message": operation},
        "400 Bad Request",
    )


def _operation(environ):
    path = environ.get("PATH_INFO", "")
    if path.startswith(_CBOR_PREFIX):
        return "monitoring:" + path[len(_CBOR_PREFIX):]
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
    if environ.get("PATH_INFO") == "/_redrive" and environ.get("REQUEST_METHOD") == "POST":
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        arn = query.get("queue", [""])[0]
        _keep[arn] = {w: query.get(f"keep_{w}", ["0"])[0] == "1" for w in ("id", "count")}
        return _json(start_response, {"queue": arn, **_keep[arn]})
    operation = _operation(environ)
    with _requests_lock:
        _requests[operation] += 1
    if operation in _MOVE_ACTIONS:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return _MOVE_ACTIONS[operation](json.loads(raw or b"{}"), start_response)
    if operation.startswith("monitoring:"):
        return _cloudwatch_cbor(environ, start_response, operation.split(":", 1)[1])
    if operation == "sqs:ReceiveMessage":
        return _with_sources(environ, start_response, lambda e, s: _dispatch(self, e, s))
    return _dispatch(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _counted

import moto.server  # noqa: E402


def _serve(host, port, app, **_werkzeug_options):
    """moto's `run_simple` call, served with keep-alive (see the module's notes)."""
    import waitress

    print(f"moto serving on http://{host}:{port} (waitress, keep-alive)", flush=True)
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=64,
        connection_limit=1000,
        channel_timeout=300,
        # Bodies are read as they arrive; moto's largest (S3 parts) stay in memory.
        inbuf_overflow=64 * 1024 * 1024,
        ident="moto",
        _quiet=True,
    )


moto.server.run_simple = _serve
main = moto.server.main

if __name__ == "__main__":
    sys.exit(main())
