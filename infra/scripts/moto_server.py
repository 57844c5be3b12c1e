"""Starts moto's server (same arguments as `moto_server`) with one race fixed and two costs
taken out of its SQS backend (moto 5.2).

The race: DeleteMessage rebuilt the queue's message list and assigned it back, so a message
sent (or deleted) by another request thread in between was lost (or came back from the dead,
invisible until its visibility timeout). Deletion now removes the message in place, under a
lock; appends and removals of single list items are atomic in CPython.

The costs: moto reads the clock for every message of a queue on every receive, through
a datetime-based helper, and for every message it returns it recomputes all the queue's
attributes (including the approximate counts, a pass over every message) only to read the
retention period. With thousands of queued messages a ReceiveMessage took seconds. The
replacements compute the same values directly; behaviour is unchanged.
"""

import sys
import threading
import time

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

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
