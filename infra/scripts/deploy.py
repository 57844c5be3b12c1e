"""`sam deploy` for one samconfig.toml environment, with extra parameter overrides that add to
the environment's own instead of replacing them. Run with the tools virtualenv's Python.

usage: deploy.py ENV [NAME=VALUE ...] [--print-parameters create|update]

SAM reads `parameter_overrides` from samconfig.toml only when the command line gives none: a
`sam deploy --parameter-overrides X=1` drops every value the environment sets (its concurrency,
log retention, alarm e-mail...), and for a stack being created the parameters left out fall
back to the template's defaults. This passes the environment's overrides with NAME=VALUE laid
over them, so a value given here changes that value only.

--print-parameters runs SAM's own deploy command up to the CloudFormation call and prints, as
JSON, the parameters it would send (for a stack being created, or an update of one that has
every parameter), without calling AWS: what a deploy would do to the settings, checked first.
"""

import contextlib
import json
import os
import shlex
import sys
import tomllib


def environment_overrides(env):
    with open("samconfig.toml", "rb") as f:
        config = tomllib.load(f)
    if env not in config:
        raise SystemExit(f"samconfig.toml has no environment [{env}] (it has: {', '.join(config)})")
    deploy = config[env].get("deploy", {}).get("parameters", {})
    return pairs(shlex.split(deploy.get("parameter_overrides", "")), "samconfig.toml")


def pairs(args, where):
    out = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise SystemExit(f"{where}: {arg!r} is not NAME=VALUE")
        out[name] = value
    return out


def argument(name, value):
    """One `--parameter-overrides` argument as SAM parses it (a quoted value may hold spaces)."""
    if value == "" or any(c in value for c in " \"'"):
        return f'{name}="{value.replace(chr(34), chr(92) + chr(34))}"'
    return f"{name}={value}"


class Stop(Exception):
    """Raised where CloudFormation would be called: the parameters are known by then."""


def stub_aws(mode, sent):
    """Lets SAM's deploy command run offline up to CreateChangeSet, recording what it sends."""
    import samcli.commands.deploy.command as command
    from samcli.commands.package.package_context import PackageContext
    from samcli.lib.deploy.deployer import Deployer

    def package(self):
        # The packaged template differs only by its code locations.
        with open(self.template_file, encoding="utf-8") as src:
            text = src.read()
        with open(self.output_template_file, "w", encoding="utf-8") as out:
            out.write(text)

    class Summary:
        def __init__(self, names):
            self.names = names

        def get_template_summary(self, **_):
            return {"Parameters": [{"ParameterKey": n} for n in self.names]}

    def has_stack(self, _stack_name):
        if mode == "update":
            from samcli.yamlhelper import yaml_parse

            with open("template.yaml", encoding="utf-8") as f:
                self._client = Summary(list(yaml_parse(f.read()).get("Parameters", {})))
            return True
        return False

    def create_change_set(self, stack_name, changeset_type, **kwargs):
        sent.update(
            {"stack": stack_name, "type": changeset_type, "parameters": kwargs["Parameters"]}
        )
        raise Stop()

    command.manage_stack = lambda **_: "packaging-bucket"
    command.print_managed_s3_bucket_info = lambda _bucket: None
    PackageContext.run = package
    Deployer.has_stack = has_stack
    Deployer._process_kwargs = staticmethod(lambda kwargs, *_: kwargs)
    Deployer._create_change_set = create_change_set


def main(argv):
    args = list(argv[1:])
    mode = None
    if "--print-parameters" in args:
        i = args.index("--print-parameters")
        if i + 1 >= len(args) or args[i + 1] not in ("create", "update"):
            raise SystemExit("--print-parameters takes create or update")
        mode = args[i + 1]
        del args[i : i + 2]
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    env, extra = args[0], pairs(args[1:], "command line")
    # SAM drops an override the template does not declare without a word: a misspelt name
    # would deploy the default.
    from samcli.yamlhelper import yaml_parse

    with open("template.yaml", encoding="utf-8") as f:
        declared = set(yaml_parse(f.read()).get("Parameters", {}))
    unknown = sorted(set(extra) - declared)
    if unknown:
        raise SystemExit(f"not a template parameter: {', '.join(unknown)}")
    merged = environment_overrides(env)
    merged.update(extra)
    sam = ["deploy", "--config-env", env]
    if merged:
        sam += ["--parameter-overrides"] + [argument(k, v) for k, v in merged.items()]
    from samcli.cli.main import cli

    if mode is None:
        return cli.main(sam, prog_name="sam", standalone_mode=True)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("SAM_CLI_TELEMETRY", "0")
    sent = {}
    stub_aws(mode, sent)
    try:
        # SAM's own report goes to standard error: standard output is the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            cli.main(sam + ["--region", os.environ["AWS_DEFAULT_REGION"]], prog_name="sam", standalone_mode=False)
    except Exception:  # SAM wraps what its command raises: Stop arrives as its own exception
        if not sent:
            raise
    if not sent:
        raise SystemExit("SAM's deploy stopped before it would call CloudFormation")
    json.dump(sent, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
