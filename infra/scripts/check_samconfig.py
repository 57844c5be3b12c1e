"""Checks samconfig.toml against template.yaml: every environment names its own stack and can
deploy without a prompt, and every parameter it overrides is one the template declares (and
not the secret, which is never a parameter). Run with the tools virtualenv's Python."""

import shlex
import sys
import tomllib

from samcli.yamlhelper import yaml_parse


def main():
    with open("samconfig.toml", "rb") as f:
        config = tomllib.load(f)
    with open("template.yaml", encoding="utf-8") as f:
        declared = set(yaml_parse(f.read()).get("Parameters", {}))
    problems, stacks = [], {}
    for env, commands in config.items():
        if not isinstance(commands, dict):
            continue
        stack = commands.get("global", {}).get("parameters", {}).get("stack_name")
        if not stack:
            problems.append(f"[{env}] names no stack_name")
        elif stack in stacks:
            problems.append(f"[{env}] and [{stacks[stack]}] deploy the same stack {stack!r}")
        else:
            stacks[stack] = env
        deploy = commands.get("deploy", {}).get("parameters", {})
        for key in ("capabilities", "resolve_s3"):
            if key not in deploy:
                problems.append(f"[{env}.deploy] lacks {key}: the deploy would prompt or fail")
        for command, section in commands.items():
            overrides = section.get("parameters", {}).get("parameter_overrides", "")
            for pair in shlex.split(overrides):
                name = pair.split("=", 1)[0]
                if name not in declared:
                    problems.append(f"[{env}.{command}] overrides {name}, not a template parameter")
    for p in problems:
        print(f"samconfig.toml: {p}", file=sys.stderr)
    if not problems:
        print(f"samconfig.toml: {len(stacks)} environments, each deployable without prompts")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
