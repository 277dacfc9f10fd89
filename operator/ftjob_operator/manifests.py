"""Reading manifests the way kubectl does.

PyYAML follows YAML 1.1, which reads `5e-5` as the string "5e-5"; kubectl (YAML 1.2) reads
a number. Hugging Face users write learning rates like that, so the loader here resolves
floats as YAML 1.2 does and `ftjob validate` sees what the cluster will see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-5`, `5E+3`)."""


KubectlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Document:
    source: str  # file name as the user gave it
    index: int  # 0-based position in a multi-document file
    body: Any

    @property
    def label(self) -> str:
        name = self.body.get("metadata", {}).get("name") if isinstance(self.body, dict) else None
        where = f"{self.source}#{self.index + 1}"
        return f"{where} ({name})" if isinstance(name, str) else where


class ManifestError(Exception):
    """A file that cannot be read or parsed at all."""


def load_text(text: str, source: str) -> list[Document]:
    try:
        bodies = list(yaml.load_all(text, Loader=KubectlLoader))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
    return [Document(source, i, body) for i, body in enumerate(bodies) if body is not None]


def load_file(path: str | Path) -> list[Document]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return load_text(text, str(path))


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)
