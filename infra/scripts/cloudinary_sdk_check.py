"""Drives the Cloudinary emulator with Cloudinary's own Python SDK (PyPI `cloudinary`), as a
user of the real service would, and checks every answer. A client nobody here wrote proves that
the emulator accepts what Cloudinary accepts (JSON Admin API bodies, multipart Upload API
calls, SHA-1 and SHA-256 signatures) and answers as Cloudinary does (paging, OCR, delivery
types, listings by prefix and tag, Search expressions, usage, 404, 401, 420), and that its
notifications are what the SDK verifies (triggers, signed webhooks of upload, rename, destroy).

usage: cloudinary_sdk_check.py all|sha256-only|listings|notifications
  env: CLOUDINARY_URL (the emulator's account), CLOUDINARY_API_BASE (its base URL),
       all, sha256-only:
       SDK_CHECK_IDS (comma-separated public ids of the account's upload images),
       SDK_CHECK_TEXT (the text of the first one), SDK_CHECK_PRIVATE_TEXT (the text of a
       private image under the first one's public id)
       listings:
       SDK_CHECK_EXPECT (JSON, worked out from the account's corpus by the caller):
         search: {expression, max_results, ids}   ids oldest first, each [type, public_id]
         bad_expression                           an expression Cloudinary refuses
         tag: {tag, max_results, ids}             ids in any order, each [type, public_id]
         prefix: {prefix, max_results, ids}       upload public_ids by public_id
         ocr: {ids, limit}                        upload public_ids to OCR; the add-on's limit
       notifications:
       SDK_CHECK_ALGORITHM (sha1 or sha256: how the account signs calls and notifications)
Prints one line per check; exits 1 on the first that fails.
"""

import base64
import http.server
import json
import math
import os
import sys
import tempfile
import threading
import time

import cloudinary
import cloudinary.api
import cloudinary.uploader
from cloudinary.exceptions import AlreadyExists, AuthorizationRequired, BadRequest, NotFound, RateLimited


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        sys.exit(1)


def expect(name, exception, call):
    try:
        call()
    except exception as e:
        check(name, True)
        return str(e)
    except Exception as e:  # noqa: BLE001 - the wrong exception is the failure reported
        check(name, False, f"raised {type(e).__name__}: {e}")
    check(name, False, f"no {exception.__name__} raised")
    return ""


def first_page_text(resource):
    data = resource.get("info", {}).get("ocr", {}).get("adv_ocr", {}).get("data") or [{}]
    annotations = data[0].get("textAnnotations") or [{}]
    return annotations[0].get("description")


def delivery_type_checks(ids, text, private_text):
    # The first public id is also a private image, with its own text: the SDK names the type.
    private = cloudinary.api.resources(type="private", max_results=10)
    listed = [(r["public_id"], r["type"]) for r in private["resources"]]
    check("list the private images", listed == [(ids[0], "private")], str(listed))
    done = cloudinary.uploader.explicit(ids[0], type="private", ocr="adv_ocr")
    check("explicit OCRs the private image", first_page_text(done) == private_text, first_page_text(done))
    updated = cloudinary.api.update(ids[0], type="private", ocr="adv_ocr")
    check("update OCRs the private image", first_page_text(updated) == private_text)
    details = cloudinary.api.resource(ids[0])
    check("the upload image keeps its own text", first_page_text(details) == text)
    expect("404 for a type the public id is not under", NotFound,
           lambda: cloudinary.api.resource(ids[0], type="authenticated"))


def all_checks(ids, text, private_text):
    # Listing, page by page, with the SDK's own cursor handling.
    seen, cursor, pages = [], None, 0
    while True:
        options = {"type": "upload", "max_results": 2}
        if cursor:
            options["next_cursor"] = cursor
        page = cloudinary.api.resources(**options)
        pages += 1
        seen += [r["public_id"] for r in page["resources"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    check("list every asset page by page", sorted(seen) == sorted(ids), f"{seen} in {pages} pages")
    check("pages of two", pages == (len(ids) + 1) // 2, f"{pages} pages")

    # The Admin API update with OCR (a JSON body).
    updated = cloudinary.api.update(ids[0], ocr="adv_ocr")
    status = updated.get("info", {}).get("ocr", {}).get("adv_ocr", {}).get("status")
    check("update with OCR (JSON body)", status == "complete", str(updated)[:300])
    check("update answers the text", first_page_text(updated) == text, first_page_text(updated))

    # The Upload API explicit with OCR (multipart/form-data), signed in SHA-1 and SHA-256.
    for algorithm in ("sha1", "sha256"):
        done = cloudinary.uploader.explicit(
            ids[1], type="upload", ocr="adv_ocr", signature_algorithm=algorithm
        )
        status = done.get("info", {}).get("ocr", {}).get("adv_ocr", {}).get("status")
        check(f"explicit with OCR (multipart, {algorithm})", status == "complete", str(done)[:300])

    # Details read back without a new OCR.
    details = cloudinary.api.resource(ids[0])
    check("details read back the OCR", first_page_text(details) == text)

    # 404, 401 (Admin and Upload APIs).
    expect("404 for a missing asset", NotFound, lambda: cloudinary.api.update("no/such asset", ocr="adv_ocr"))
    expect("401 for a wrong secret (Admin API)", AuthorizationRequired,
           lambda: cloudinary.api.resources(api_secret="wrong"))
    expect("401 for a wrong signature (Upload API)", AuthorizationRequired,
           lambda: cloudinary.uploader.explicit(ids[1], type="upload", ocr="adv_ocr", api_secret="wrong"))

    delivery_type_checks(ids, text, private_text)

    # 420 once the hourly Admin quota is spent, with Cloudinary's message.
    def spend():
        for _ in range(1000):
            cloudinary.api.resources(max_results=1)
    message = expect("420 once the Admin quota is spent", RateLimited, spend)
    check("420 says so", "Rate Limit" in message, message)


def sha256_only_checks(ids):
    expect("an account requiring SHA-256 refuses SHA-1", AuthorizationRequired,
           lambda: cloudinary.uploader.explicit(ids[0], type="upload", ocr="adv_ocr", signature_algorithm="sha1"))
    done = cloudinary.uploader.explicit(ids[0], type="upload", ocr="adv_ocr", signature_algorithm="sha256")
    status = done.get("info", {}).get("ocr", {}).get("adv_ocr", {}).get("status")
    check("an account requiring SHA-256 takes SHA-256", status == "complete", str(done)[:300])


def pages_of(call, **options):
    """Every page of a listing the SDK pages with next_cursor: the resources, and the pages."""
    resources, pages, cursor = [], [], None
    while True:
        page = call(**(dict(options, next_cursor=cursor) if cursor else options))
        pages.append(page)
        resources += page["resources"]
        cursor = page.get("next_cursor")
        if not cursor:
            return resources, pages


def search_checks(search, bad_expression):
    expected = [tuple(i) for i in search["ids"]]
    size = search["max_results"]

    def run(next_cursor=None):
        query = (cloudinary.Search().expression(search["expression"]).max_results(size)
                 .sort_by("created_at", "asc").with_field("tags"))
        if next_cursor:
            query = query.next_cursor(next_cursor)
        return query.execute()

    found, pages = pages_of(run)
    got = [(r["type"], r["public_id"]) for r in found]
    check("search: total_count is every match", all(p["total_count"] == len(expected) for p in pages),
          str([p["total_count"] for p in pages]))
    check("search: paged by next_cursor, max_results a page", len(pages) == math.ceil(len(expected) / size)
          and all(len(p["resources"]) <= size for p in pages), f"{len(pages)} pages")
    check("search: folder/prefix/tag/format expression matches, oldest first", got == expected,
          f"{got} != {expected}")
    check("search: with_field tags carries them", all(isinstance(r.get("tags"), list) for r in found))
    check("search: folder carried", all(r["folder"] == r["public_id"].rpartition("/")[0] for r in found))
    first = cloudinary.Search().expression(search["expression"]).execute()
    check("search: 50 a page and no tags by default",
          len(first["resources"]) == min(50, len(expected)) and "tags" not in first["resources"][0],
          str(first["resources"][:1]))
    message = expect("search: a bad expression is refused (400)", BadRequest,
                     lambda: cloudinary.Search().expression(bad_expression).execute())
    check("search: the refusal says why", "expression" in message, message)


def tag_checks(tag):
    expected = sorted(tuple(i) for i in tag["ids"])
    size = tag["max_results"]
    found, pages = pages_of(cloudinary.api.resources_by_tag, tag=tag["tag"], max_results=size, tags=True)
    got = sorted((r["type"], r["public_id"]) for r in found)
    check(f"resources_by_tag({tag['tag']!r}): every image carrying it, of every type", got == expected,
          f"{got} != {expected}")
    check("resources_by_tag: paged by next_cursor", len(pages) == math.ceil(len(expected) / size),
          f"{len(pages)} pages")
    check("resources_by_tag: tags=True carries them", all(tag["tag"] in r["tags"] for r in found))
    plain = cloudinary.api.resources_by_tag(tag["tag"], max_results=1)
    check("resources_by_tag: no tags unless asked", "tags" not in plain["resources"][0])
    none = cloudinary.api.resources_by_tag("no such tag")
    check("resources_by_tag: a tag nobody carries lists nothing", none["resources"] == [], str(none))


def prefix_checks(prefix):
    size = prefix["max_results"]
    found, pages = pages_of(cloudinary.api.resources, type="upload", prefix=prefix["prefix"], max_results=size)
    got = [r["public_id"] for r in found]
    check(f"resources(prefix={prefix['prefix']!r}): the upload images under it, by public_id",
          got == prefix["ids"], f"{got} != {prefix['ids']}")
    check("resources(prefix=...): paged by next_cursor", len(pages) == math.ceil(len(prefix["ids"]) / size),
          f"{len(pages)} pages")
    check("resources(prefix=...): upload images only", all(r["type"] == "upload" for r in found))


def usage_checks(ocr):
    def adv_ocr():
        return cloudinary.api.usage()["adv_ocr"]

    usage = cloudinary.api.usage()
    check("usage: a plan and a date", bool(usage.get("plan")) and len(usage.get("last_updated", "")) == 10,
          str(usage))
    before = usage["adv_ocr"]
    check("usage: the OCR add-on's monthly limit", before["limit"] == ocr["limit"], str(before))
    first, second, refused = ocr["ids"]
    cloudinary.api.update(first, ocr="adv_ocr")
    after = adv_ocr()
    check("usage: an OCR (update) counts", after["usage"] == before["usage"] + 1, f"{before} then {after}")
    check("usage: used_percent is usage over limit",
          abs(after["used_percent"] - 100 * after["usage"] / after["limit"]) < 0.01, str(after))
    cloudinary.uploader.explicit(second, type="upload", ocr="adv_ocr")
    spent = adv_ocr()
    check("usage: an OCR (explicit) counts, up to the limit", spent["usage"] == ocr["limit"], str(spent))
    for name, call in (
        ("update", lambda: cloudinary.api.update(refused, ocr="adv_ocr")),
        ("explicit", lambda: cloudinary.uploader.explicit(refused, type="upload", ocr="adv_ocr")),
    ):
        message = expect(f"420 past the add-on's monthly limit ({name})", RateLimited, call)
        check(f"420 names the monthly limit ({name})", "Monthly limit" in message and "adv_ocr" in message,
              message)
    check("usage: refused OCRs are not billed", adv_ocr()["usage"] == ocr["limit"])


def listings_checks(expected):
    search_checks(expected["search"], expected["bad_expression"])
    tag_checks(expected["tag"])
    prefix_checks(expected["prefix"])
    usage_checks(expected["ocr"])


class Receiver:
    """A webhook endpoint on 127.0.0.1: records every POST (path, X-Cld-Timestamp,
    X-Cld-Signature, Content-Type, body) and answers 200."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append({
                        "path": self.path,
                        "timestamp": self.headers.get("X-Cld-Timestamp"),
                        "signature": self.headers.get("X-Cld-Signature"),
                        "content_type": self.headers.get("Content-Type"),
                        "body": body.decode("utf-8"),
                    })
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count, seconds=20):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond the count arrives too
        with self.lock:
            return list(self.received)


UPLOAD_FIELDS = ("asset_id", "public_id", "version", "version_id", "width", "height", "format",
                 "resource_type", "created_at", "tags", "bytes", "type", "etag", "placeholder",
                 "url", "secure_url", "original_filename")


def trigger_checks(receiver):
    """Triggers for upload, rename and delete to /hooks, and a second upload one to /second;
    the second's id."""
    made = {e: cloudinary.api.create_trigger(receiver.url + "/hooks", e) for e in ("upload", "rename", "delete")}
    second = cloudinary.api.create_trigger(receiver.url + "/second", "upload")
    check("create_trigger answers the trigger",
          all(t.get("id") and t.get("created_at") and t.get("updated_at") for t in [second, *made.values()])
          and made["rename"]["event_type"] == "rename" and second["uri"] == receiver.url + "/second", str(second))
    listed = cloudinary.api.triggers()["triggers"]
    check("triggers() lists all four", sorted(t["id"] for t in listed)
          == sorted([second["id"]] + [t["id"] for t in made.values()]), str(listed))
    uploads = cloudinary.api.triggers(event_type="upload")["triggers"]
    check("triggers(event_type='upload') lists the two upload triggers",
          sorted(t["uri"] for t in uploads) == sorted([receiver.url + "/hooks", receiver.url + "/second"]),
          str(uploads))
    expect("a duplicate trigger is refused (409)", AlreadyExists,
           lambda: cloudinary.api.create_trigger(receiver.url + "/hooks", "upload"))
    expect("an unknown event type is refused (400)", BadRequest,
           lambda: cloudinary.api.create_trigger(receiver.url + "/hooks", "no_such_event"))
    updated = cloudinary.api.update_trigger(second["id"], receiver.url + "/moved")
    check("update_trigger answers ok", updated.get("message") == "ok", str(updated))
    moved = [t for t in cloudinary.api.triggers()["triggers"] if t["id"] == second["id"]]
    check("update_trigger changes the URI", moved and moved[0]["uri"] == receiver.url + "/moved", str(moved))
    expect("update_trigger of an unknown id is a 404", NotFound,
           lambda: cloudinary.api.update_trigger("no-such-trigger", receiver.url + "/x"))
    return second["id"]


def verify_checks(received, algorithm):
    for n in received:
        check(f"{n['path']} {json.loads(n['body'])['notification_type']}: the SDK verifies the signature",
              cloudinary.utils.verify_notification_signature(
                  n["body"], n["timestamp"], n["signature"], valid_for=7200, algorithm=algorithm),
              str(n))
        check("  as JSON", n["content_type"] == "application/json", n["content_type"])
        check(f"  signed in {algorithm}", len(n["signature"]) == (64 if algorithm == "sha256" else 40))
        tampered = n["body"].replace('"public_id"', '"public_ID"').replace('"resources"', '"Resources"')
        tampered = tampered if tampered != n["body"] else n["body"] + " "
        check("  a tampered body is refused", not cloudinary.utils.verify_notification_signature(
            tampered, n["timestamp"], n["signature"], valid_for=7200, algorithm=algorithm))
        check("  a stale timestamp is refused", not cloudinary.utils.verify_notification_signature(
            n["body"], int(n["timestamp"]) - 7300, n["signature"], valid_for=7200, algorithm=algorithm))


def notifications_checks(algorithm):
    receiver = Receiver()
    second_id = trigger_checks(receiver)
    first_id, renamed_id = "sdk/notify one", "sdk/notify two"

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "street sign.png")
        with open(path, "wb") as f:
            f.write(b"HELLO SDK\n")
        first = cloudinary.uploader.upload(path, public_id=first_id, tags=["sdk", "notify"])
    check("upload (a file) answers the asset", first["public_id"] == first_id
          and all(k in first for k in UPLOAD_FIELDS) and "overwritten" not in first, str(first))
    check("upload: the original file name", first["original_filename"] == "street sign", first["original_filename"])
    check("upload: the SDK verifies the answer's signature", cloudinary.utils.verify_api_response_signature(
        first["public_id"], first["version"], first["signature"], algorithm=algorithm))
    data_uri = "data:image/png;base64," + base64.b64encode(b"SECOND\n").decode()
    second = cloudinary.uploader.upload(data_uri, public_id=first_id, overwrite=True)
    check("upload over it (a data URI): overwritten, a higher version",
          second.get("overwritten") is True and second["version"] > first["version"]
          and second["asset_id"] == first["asset_id"], str(second))
    ocr = cloudinary.api.update(first_id, ocr="adv_ocr")
    check("the new version's OCR reads its text", first_page_text(ocr) == "SECOND\n", str(first_page_text(ocr)))
    kept = cloudinary.uploader.upload(data_uri, public_id=first_id, overwrite=False)
    check("upload with overwrite=False: the existing asset, unchanged",
          kept.get("existing") is True and kept["version"] == second["version"], str(kept))
    renamed = cloudinary.uploader.rename(first_id, renamed_id)
    check("rename answers the renamed asset", renamed["public_id"] == renamed_id
          and renamed["asset_id"] == first["asset_id"], str(renamed))
    expect("rename of a missing asset is a 404", NotFound,
           lambda: cloudinary.uploader.rename(first_id, "sdk/elsewhere"))
    destroyed = cloudinary.uploader.destroy(renamed_id)
    check("destroy answers ok", destroyed.get("result") == "ok", str(destroyed))
    again = cloudinary.uploader.destroy(renamed_id)
    check("destroy again: not found", again.get("result") == "not found", str(again))
    expect("the destroyed asset is gone", NotFound, lambda: cloudinary.api.resource(renamed_id))

    received = receiver.wait_for(6)
    hooks = [n for n in received if n["path"] == "/hooks"]
    moved = [n for n in received if n["path"] == "/moved"]
    check("/hooks got two uploads, a rename and a delete",
          sorted(json.loads(n["body"])["notification_type"] for n in hooks)
          == ["delete", "rename", "upload", "upload"], str([n["body"][:80] for n in hooks]))
    check("the moved trigger got the two uploads, nothing at its old URI",
          len(moved) == 2 and not any(n["path"] == "/second" for n in received), str(received))
    verify_checks(received, algorithm)

    def one(kind, **fields):
        for n in hooks:
            body = json.loads(n["body"])
            if body["notification_type"] == kind and all(body.get(k) == v for k, v in fields.items()):
                return body
        check(f"a {kind} notification with {fields}", False, str([n["body"] for n in hooks]))

    for result, overwritten in ((first, False), (second, True)):
        body = one("upload", version=result["version"])
        check(f"upload notification (v{result['version']}): the upload's fields",
              all(body.get(k) == result[k] for k in UPLOAD_FIELDS), json.dumps(body))
        check("  overwritten only for the overwrite", body.get("overwritten", False) is overwritten)
        check("  timestamp and request_id (the call's)", bool(body.get("timestamp"))
              and body.get("request_id") == result.get("request_id"), json.dumps(body))
    body = one("rename")
    check("rename notification: from, to, asset_id, type",
          (body["from_public_id"], body["to_public_id"], body["asset_id"], body["type"], body["resource_type"])
          == (first_id, renamed_id, first["asset_id"], "upload", "image"), json.dumps(body))
    check("rename notification: the version, when carried", body.get("version", second["version"]) == second["version"])
    body = one("delete")
    check("delete notification: the resource", body["resources"] == [{
        "resource_type": "image", "type": "upload", "public_id": renamed_id,
        "asset_id": first["asset_id"], "version": renamed["version"]}], json.dumps(body))

    deleted = cloudinary.api.delete_trigger(second_id)
    check("delete_trigger answers ok", deleted.get("message") == "ok", str(deleted))
    left = cloudinary.api.triggers()["triggers"]
    check("triggers() no longer lists it", len(left) == 3 and second_id not in [t["id"] for t in left], str(left))
    expect("delete_trigger of a deleted trigger is a 404", NotFound, lambda: cloudinary.api.delete_trigger(second_id))
    print(json.dumps({"received": len(received)}))


def main(argv):
    if len(argv) != 2 or argv[1] not in ("all", "sha256-only", "listings", "notifications"):
        print(__doc__, file=sys.stderr)
        return 2
    cloudinary.config(upload_prefix=os.environ["CLOUDINARY_API_BASE"])
    check("the SDK read CLOUDINARY_URL", bool(cloudinary.config().api_key))
    if argv[1] == "listings":
        listings_checks(json.loads(os.environ["SDK_CHECK_EXPECT"]))
        print(f"cloudinary {cloudinary.VERSION}: every check passed")
        return 0
    if argv[1] == "notifications":
        algorithm = os.environ.get("SDK_CHECK_ALGORITHM", "sha1")
        cloudinary.config(signature_algorithm=algorithm)
        notifications_checks(algorithm)
        print(f"cloudinary {cloudinary.VERSION}: every check passed")
        return 0
    ids = os.environ["SDK_CHECK_IDS"].split(",")
    if argv[1] == "all":
        all_checks(ids, os.environ["SDK_CHECK_TEXT"], os.environ["SDK_CHECK_PRIVATE_TEXT"])
    else:
        sha256_only_checks(ids)
    print(f"cloudinary {cloudinary.VERSION}: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
