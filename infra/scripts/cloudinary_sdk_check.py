"""Drives the Cloudinary emulator with Cloudinary's own Python SDK (PyPI `cloudinary`), as a
user of the real service would, and checks every answer. A client nobody here wrote proves that
the emulator accepts what Cloudinary accepts (JSON Admin API bodies, multipart Upload API
calls, SHA-1 and SHA-256 signatures) and answers as Cloudinary does (paging, OCR, delivery
types, 404, 401, 420).

usage: cloudinary_sdk_check.py all|sha256-only
  env: CLOUDINARY_URL (the emulator's account), CLOUDINARY_API_BASE (its base URL),
       SDK_CHECK_IDS (comma-separated public ids of the account's upload images),
       SDK_CHECK_TEXT (the text of the first one), SDK_CHECK_PRIVATE_TEXT (the text of a
       private image under the first one's public id)
Prints one line per check; exits 1 on the first that fails.
"""

import os
import sys

import cloudinary
import cloudinary.api
import cloudinary.uploader
from cloudinary.exceptions import AuthorizationRequired, NotFound, RateLimited


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


def main(argv):
    if len(argv) != 2 or argv[1] not in ("all", "sha256-only"):
        print(__doc__, file=sys.stderr)
        return 2
    cloudinary.config(upload_prefix=os.environ["CLOUDINARY_API_BASE"])
    check("the SDK read CLOUDINARY_URL", bool(cloudinary.config().api_key))
    ids = os.environ["SDK_CHECK_IDS"].split(",")
    if argv[1] == "all":
        all_checks(ids, os.environ["SDK_CHECK_TEXT"], os.environ["SDK_CHECK_PRIVATE_TEXT"])
    else:
        sha256_only_checks(ids)
    print(f"cloudinary {cloudinary.VERSION}: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
