"""Print the requirements of pyproject.toml's core dependencies plus the named extras.

Used by the Dockerfiles to install dependencies in a layer that depends on pyproject.toml
alone, so that editing the source does not reinstall them.

    python3 requirements-from-pyproject.py pyproject.toml trainer deepspeed
"""

import sys
import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"pyproject.toml: no extra named {', '.join(unknown)}")
    out = list(project.get("dependencies", []))
    for extra in extras:
        out += [r for r in optional[extra] if r not in out]
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print("\n".join(requirements(tomllib.load(f), sys.argv[2:])))
