"""boto3 (AWS's own SDK, a client nobody here wrote) against moto_server.py's BatchExecuteStatement:
each write statement keeps DynamoDB's documented semantics, answered member by member.

  AWS_ENDPOINT_URL=http://127.0.0.1:PORT python partiql_check.py TABLE

TABLE is created (partition key `publicId`, a string) and used; it must not exist. Prints what it
checked and "every check passed", or fails with the first difference.
"""

import os
import sys

import boto3
import botocore.exceptions


def main(table):
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "publicId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "publicId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    s = lambda v: {"S": v}  # noqa: E731
    n = lambda v: {"N": str(v)}  # noqa: E731
    insert = f"INSERT INTO \"{table}\" VALUE {{'publicId': ?, 'claimToken': ?, 'attempts': ?}}"
    claim = (
        f'UPDATE "{table}" SET "claimToken" = ? SET "attempts" = ? REMOVE "error" '
        'WHERE "publicId" = ? AND "attempts" = ? AND ("claimExpiresAt" IS MISSING OR "claimExpiresAt" < ?)'
    )

    def run(*statements):
        answer = ddb.batch_execute_statement(
            Statements=[{"Statement": st, "Parameters": params} for st, params in statements]
        )
        return [r.get("Error", {}).get("Code") for r in answer["Responses"]]

    def item(key):
        return ddb.get_item(TableName=table, Key={"publicId": s(key)}, ConsistentRead=True).get("Item")

    def check(what, got, expected):
        if got != expected:
            sys.exit(f"{what}: expected {expected!r}, got {got!r}")
        print(f"ok  {what}")

    check(
        "two inserts of new keys are written",
        run((insert, [s("a"), s("t1"), n(1)]), (insert, [s("b"), s("t1"), n(1)])),
        [None, None],
    )
    check(
        "an insert of an existing key fails alone with DuplicateItem",
        run((insert, [s("a"), s("t2"), n(1)]), (insert, [s("c"), s("t2"), n(1)])),
        ["DuplicateItem", None],
    )
    check("the duplicate left the item as it was", item("a")["claimToken"], s("t1"))
    ddb.update_item(
        TableName=table,
        Key={"publicId": s("b")},
        UpdateExpression="SET #e = :e",
        ExpressionAttributeNames={"#e": "error"},
        ExpressionAttributeValues={":e": s("timed out")},
    )
    check(
        "an update runs when its condition holds, and fails alone when it does not",
        run(
            (claim, [s("t3"), n(2), s("b"), n(1), n(5)]),
            (claim, [s("t3"), n(2), s("a"), n(7), n(5)]),
        ),
        [None, "ConditionalCheckFailed"],
    )
    check(
        "the update set and removed what it said",
        (item("b")["claimToken"], item("b")["attempts"], "error" in item("b")),
        (s("t3"), n(2), False),
    )
    check("the failed update wrote nothing", item("a")["claimToken"], s("t1"))
    check(
        "an update of a key with no item fails its condition (it creates nothing)",
        run((claim, [s("t4"), n(1), s("nobody"), n(0), n(5)]), (claim, [s("t4"), n(3), s("b"), n(2), n(5)])),
        ["ConditionalCheckFailed", None],
    )
    check("no item was created", item("nobody"), None)
    check(
        "IS MISSING and a comparison against a present attribute",
        run(
            (
                f'UPDATE "{table}" SET "claimExpiresAt" = ? WHERE "publicId" = ? AND "claimExpiresAt" IS MISSING',
                [n(100), s("c")],
            ),
            (
                f'UPDATE "{table}" SET "claimToken" = ? WHERE "publicId" = ? AND "claimExpiresAt" IS MISSING',
                [s("late"), s("c")],
            ),
            (
                f'UPDATE "{table}" SET "claimToken" = ? WHERE "publicId" = ? AND ("claimExpiresAt" < ? OR "claimToken" = ?)',
                [s("t5"), s("c"), n(200), s("none")],
            ),
        ),
        [None, "ConditionalCheckFailed", None],
    )
    check("the last update's effect", item("c")["claimToken"], s("t5"))
    check(
        "a statement with too few parameters fails alone with ValidationError",
        run((insert, [s("d"), s("t1")]), (insert, [s("e"), s("t1"), n(1)])),
        ["ValidationError", None],
    )
    try:
        run(*[(insert, [s(f"k{i}"), s("t"), n(1)]) for i in range(26)])
        sys.exit("26 statements in one request were accepted")
    except botocore.exceptions.ClientError as e:
        check("26 statements are refused as a whole", e.response["Error"]["Code"], "ValidationException")
    check("none of the 26 was written", item("k0"), None)
    print("every check passed")


if __name__ == "__main__":
    main(sys.argv[1])
