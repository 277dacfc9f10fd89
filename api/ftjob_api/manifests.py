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


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Document:
    source: str  # file name as the user gave it
    index: int  # 0-based position in a multi-document file
    body: Any
    node: yaml.Node | None = None  # the parsed YAML tree, for line numbers

    @property
    def name(self) -> str | None:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    def line_of(self, path: str) -> int | None:
        """1-based line of the deepest node on a field path such as `spec.env[0].name`."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line
        for key, index in _PATH_TOKEN.findall(path):
            child = None
            if key and isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == key:
                        line, child = k.start_mark.line, v
                        break
            elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
                child = node.value[int(index)]
                line = child.start_mark.line
            if child is None:
                break
            node = child
        return line + 1

    def locate(self, path: str) -> str:
        """`file:line (name)` for messages, so editors can jump to the field."""
        line = self.line_of(path)
        where = f"{self.source}:{line}" if line else f"{self.source}#{self.index + 1}"
        return f"{where} ({self.name})" if self.name else where

    @property
    def label(self) -> str:
        where = f"{self.source}#{self.index + 1}"
        return f"{where} ({self.name})" if self.name else where


class ManifestError(Exception):
    """A file that cannot be read or parsed at all."""


def load_text(text: str, source: str) -> list[Document]:
    loader = KubectlLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            body = loader.construct_document(node)
            if body is not None:
                documents.append(Document(source, len(documents), body, node))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return documents


def load_file(path: str | Path) -> list[Document]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return load_text(text, str(path))


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)
