#!/usr/bin/env python3
"""The values table of deploy/helm/ferry/README.md, generated from the
`# --` comments of values.yaml.

    values_table.py           print the table
    values_table.py --write   replace the table between the README markers
    values_table.py --check   exit 1 when the README table is out of date
"""
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "ferry"
BEGIN = "<!-- values-table:begin -->"
END = "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def documented_keys(text):
    """(dotted path, description) for every key preceded by a `# --` comment."""
    stack = []  # (indent, key)
    pending = None
    rows = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        if pending is not None:
            rows.append((".".join(k for _, k in stack), pending))
            pending = None
    return rows


def lookup(values, path):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def type_name(value):
    if value is None:
        return "int or null"
    return {bool: "bool", int: "int", float: "number", str: "string",
            list: "list", dict: "object"}[type(value)]


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    out = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, desc in documented_keys(text):
        value = lookup(values, path)
        default = json.dumps(value, separators=(", ", ": "))
        default = default.replace("|", "\\|")
        desc = desc.replace("|", "\\|")
        out.append(f"| `{path}` | {type_name(value)} | `{default}` | {desc} |")
    return "\n".join(out) + "\n"


def main():
    readme = CHART / "README.md"
    generated = table()
    if len(sys.argv) == 1:
        sys.stdout.write(generated)
        return 0
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = f"{head}{BEGIN}\n{generated}{END}{tail}"
    if sys.argv[1] == "--write":
        readme.write_text(updated)
        return 0
    if sys.argv[1] == "--check":
        if updated != text:
            print("README.md values table is out of date: run "
                  "python3 deploy/helm/tests/values_table.py --write", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
