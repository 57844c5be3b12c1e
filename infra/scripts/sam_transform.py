"""Transforms template.yaml with SAM's own translator (offline) and prints the CloudFormation
template it deploys, as JSON: what `sam deploy` would hand CloudFormation, for the tests that
check what SAM generates (roles, policies, schedules). Run with the tools virtualenv's Python.

usage: sam_transform.py TEMPLATE [NAME=VALUE ...]   (parameter overrides)
"""

import json
import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform


class NoManagedPolicies(ManagedPolicyLoader):
    """The template names no managed policy by name, so IAM is never asked (no network)."""

    def __init__(self):
        super().__init__(iam_client=None)

    def load(self):
        return {}


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    # The translator names the region in a few ARNs it builds; any region does for the checks.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(argv[1], encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # `sam deploy` packages each function first: its CodeUri becomes an S3 object.
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        code = properties.get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(code, str):
            if not code.startswith("s3://"):
                properties["CodeUri"] = "s3://packaged/" + code.strip("/") + ".zip"
    parameters = dict(arg.split("=", 1) for arg in argv[2:])
    out = transform(template, parameters, NoManagedPolicies())
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
