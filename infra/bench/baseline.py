"""The baseline `make bench` compares the pipeline with: the one-off script of the original blog
post. It lists every image with the Admin API, then a thread pool asks Cloudinary's Admin API
to run OCR on each one (`ocr=adv_ocr`) and writes the text with one `put_item` per image. No
queue, no idempotency, no retries, no rate-limit handling.

Reads CLOUDINARY_URL and CLOUDINARY_API_BASE (the emulator) and AWS_ENDPOINT_URL (moto) from
the environment. Prints one JSON line: images, errors, wall and CPU seconds of the work (after
imports and client set-up, as for the pipeline).
"""

import argparse
import concurrent.futures
import json
import os
import resource
import sys
import time
import urllib.parse

import boto3
import requests


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()

    url = urllib.parse.urlparse(os.environ["CLOUDINARY_URL"])
    auth = (urllib.parse.unquote(url.username), urllib.parse.unquote(url.password))
    api = f"{os.environ['CLOUDINARY_API_BASE'].rstrip('/')}/v1_1/{url.hostname}"
    # A client, not a resource: clients are safe to share between threads.
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=args.threads)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    wall0, cpu0 = time.monotonic(), cpu_seconds()
    public_ids, cursor = [], None
    while True:
        params = {"max_results": 500}
        if cursor:
            params["next_cursor"] = cursor
        page = session.get(f"{api}/resources/image/upload", params=params, auth=auth, timeout=60)
        page.raise_for_status()
        body = page.json()
        public_ids.extend(r["public_id"] for r in body["resources"])
        cursor = body.get("next_cursor")
        if not cursor:
            break

    def ocr(public_id):
        path = urllib.parse.quote(public_id, safe="/")
        answer = session.post(
            f"{api}/resources/image/upload/{path}", data={"ocr": "adv_ocr"}, auth=auth, timeout=60
        )
        answer.raise_for_status()
        ocr = answer.json().get("info", {}).get("ocr", {}).get("adv_ocr", {})
        annotations = (ocr.get("data") or [{}])[0].get("textAnnotations") or []
        item = {
            "publicId": {"S": public_id},
            "status": {"S": "done" if annotations else "no_text"},
        }
        if annotations:
            item["text"] = {"S": annotations[0]["description"]}
            item["locale"] = {"S": annotations[0].get("locale", "")}
        dynamodb.put_item(TableName=args.table, Item=item)

    errors = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as pool:
        for done in concurrent.futures.as_completed([pool.submit(ocr, p) for p in public_ids]):
            if done.exception() is not None:
                errors += 1
    print(
        json.dumps(
            {
                "images": len(public_ids),
                "errors": errors,
                "wall_s": time.monotonic() - wall0,
                "cpu_s": cpu_seconds() - cpu0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
