"""Label and field selectors as the API server reads them (`?labelSelector=`, `?fieldSelector=`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    if not selector:
        return lambda labels: True
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector):
        if m := _SET_RE.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            checks.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif term.startswith("!"):
            checks.append(lambda lb, k=term[1:].strip(): k not in lb)
        else:
            checks.append(lambda lb, k=term: k in lb)
    return lambda labels: all(check(labels) for check in checks)


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def parse_field_selector(selector: str | None) -> Matcher:
    if not selector:
        return lambda obj: True
    checks: list[Matcher] = []
    for term in _split_terms(selector):
        if "!=" in term:
            path, value = term.split("!=", 1)
            checks.append(lambda o, p=path.strip(), v=value.strip(): _field(o, p) != v)
        else:
            path, value = term.replace("==", "=").split("=", 1)
            checks.append(lambda o, p=path.strip(), v=value.strip(): _field(o, p) == v)
    return lambda obj: all(check(obj) for check in checks)


def matches(obj: dict[str, Any], label_selector: str | None, field_selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return parse_label_selector(label_selector)(labels) and parse_field_selector(field_selector)(obj)
