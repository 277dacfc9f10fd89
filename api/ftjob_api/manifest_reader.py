"""Reading a manifest file from any bytes: documents, or one line that says what is wrong.

`manifests.load_text` reads YAML the way kubectl does; this module is the strict front door
that `ftjob validate` and `ftjob run --local` use on files a person hands them. Whatever the
bytes, it returns documents whose bodies are plain JSON values (str keys; str, int64, finite
float, bool, None, lists and mappings), which is all the Kubernetes API can hold, or raises
`ManifestError` with `file:line:column: what is wrong`. It never lets a traceback out.

Decisions (docs/exit-codes.md lists the messages):
- the file must be UTF-8 (a UTF-8 BOM is fine; a UTF-16/32 BOM or other bytes are refused,
  naming the line and column of the first bad byte; NUL bytes mean a binary file);
- at most MAX_BYTES (the API server takes at most 3 MiB per object);
- nesting at most MAX_DEPTH levels (a FineTuneJob needs about ten);
- a key twice in one mapping is refused, naming both lines (kubectl --validate=strict
  refuses it too; YAML libraries would silently keep one of the two);
- keys must be strings: `1:`, `on:` or `null:` would reach the cluster as "1", "true", ...;
- numbers must fit JSON: no .nan/.inf, no float that overflows (1e400), integers within int64;
- `!!binary`, `!!set`, `!!omap`, `!!pairs` and Python tags are refused; timestamps stay strings
  (as kubectl sends them); anchors, aliases and merge keys (`<<`) work as in kubectl.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from .manifests import Document, KubectlLoader, ManifestError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
INT64 = (-(2**63), 2**63 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")

_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32 (little-endian)",
    b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
    b"\xff\xfe": "UTF-16 (little-endian)",
    b"\xfe\xff": "UTF-16 (big-endian)",
}
_REFUSED_TAGS = {
    "tag:yaml.org,2002:binary": "binary data",
    "tag:yaml.org,2002:set": "a set",
    "tag:yaml.org,2002:omap": "an ordered map",
    "tag:yaml.org,2002:pairs": "a list of pairs",
}


class StrictLoader(KubectlLoader):
    """KubectlLoader that only builds JSON values and refuses what kubectl would mangle."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    # ---- composing: bounded nesting (PyYAML's composer recurses once per level)
    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_DEPTH} levels",
                                           problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    # ---- constructing
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    hint = (f"; quote it (\"{key_node.value}\") if it is meant as a name"
                            if isinstance(key_node, yaml.ScalarNode) else "")
                    what = (f"key {_show(key)} is {_kind(key)}, not a string{hint}"
                            if isinstance(key_node, yaml.ScalarNode)
                            else f"{_kind(key)} cannot be a key; keys must be strings")
                    raise ConstructorError(None, None, what, key_node.start_mark)
                if key in seen:
                    first = seen[key].line + 1
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first}); "
                        "remove one of the two", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        value = super().construct_yaml_int(node)
        if not INT64[0] <= value <= INT64[1]:
            raise ConstructorError(None, None, f"integer {node.value} does not fit in 64 bits "
                                   "(the most Kubernetes stores)", node.start_mark)
        return value

    def construct_yaml_float(self, node: Any) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            why = "is not a number" if math.isnan(value) else "is infinite"
            raise ConstructorError(None, None, f"{node.value} {why}; JSON (and so the Kubernetes "
                                   "API) has only finite numbers", node.start_mark)
        return value

    def construct_yaml_str(self, node: Any) -> str:
        value = super().construct_yaml_str(node)
        if not _SURROGATE.search(value):
            return value
        # "\ud83d\ude00" in a double-quoted string is one character, as in JSON and kubectl.
        try:
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise ConstructorError(None, None, "a lone surrogate escape (\\ud800-\\udfff) is "
                                   "not a character", node.start_mark) from None

    def construct_plain_string(self, node: Any) -> str:
        return str(self.construct_scalar(node))

    def refuse_tag(self, node: Any) -> Any:
        short = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
        what = f"{_REFUSED_TAGS[node.tag]} ({short})" if node.tag in _REFUSED_TAGS else \
            f"the tag {short}"
        raise ConstructorError(None, None, f"{what} cannot be "
                               "sent to the Kubernetes API; use plain strings, numbers, lists "
                               "and mappings", node.start_mark)


StrictLoader.add_constructor("tag:yaml.org,2002:str", StrictLoader.construct_yaml_str)
StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
StrictLoader.add_constructor("tag:yaml.org,2002:timestamp",
                             StrictLoader.construct_plain_string)
for _tag in _REFUSED_TAGS:
    StrictLoader.add_constructor(_tag, StrictLoader.refuse_tag)
StrictLoader.add_constructor(None, StrictLoader.refuse_tag)  # any other (unknown) tag
# A plain `=` or `<<` as a value is a string to kubectl; PyYAML 1.1 has no constructor for them.
StrictLoader.add_constructor("tag:yaml.org,2002:value", StrictLoader.construct_plain_string)
StrictLoader.add_constructor("tag:yaml.org,2002:merge", StrictLoader.construct_plain_string)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(source: str, mark: Any) -> str:
    if mark is None:
        return source
    return f"{source}:{mark.line + 1}:{mark.column + 1}"


def yaml_error(source: str, exc: yaml.YAMLError) -> ManifestError:
    """One line: `file:line:column: not valid YAML: problem (context at line N)`."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or "not valid YAML"
        mark = exc.problem_mark or exc.context_mark
        detail = problem
        if "'\\t'" in problem:
            problem = detail = f"{problem} (indent YAML with spaces, not tabs)"
        if exc.context and exc.context_mark is not None and exc.problem_mark is not None \
                and exc.context_mark.line != exc.problem_mark.line:
            detail += f" ({exc.context} at line {exc.context_mark.line + 1})"
        elif exc.context:
            detail = f"{exc.context}: {problem}"
        return ManifestError(f"{_where(source, mark)}: not valid YAML: {_clip(detail)}")
    return ManifestError(f"{source}: not valid YAML: {_clip(str(exc))}")


def decode(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 BOM is dropped), or ManifestError naming the first bad byte."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise ManifestError(f"{source}: the file is {name}; save it as UTF-8")
    if b"\x00" in data[:8192]:
        at = data.index(b"\x00")
        raise ManifestError(f"{source}:{_line_col(data, at)}: a NUL byte: this looks like a "
                            "binary file, not a YAML manifest")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source}:{_line_col(data, exc.start)}: not UTF-8 text (byte "
                            f"0x{data[exc.start]:02x}); save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _line_col(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"{line}:{column}"


def _text_line_col(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"{line}:{offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def load_bytes(data: bytes, source: str) -> list[Document]:
    """The non-empty documents of a manifest, or ManifestError (one line)."""
    if len(data) > MAX_BYTES:
        raise ManifestError(f"{source}: {len(data) / 2**20:.1f} MiB is too large for a "
                            f"manifest (at most {MAX_BYTES // 2**20} MiB; the API server takes "
                            "at most 3 MiB per object)")
    text = decode(data, source)
    documents = []
    loader = None
    try:
        loader = StrictLoader(text)
        while loader.check_node():
            node = loader.get_node()
            body = loader.construct_document(node)
            if body is not None:
                documents.append(Document(source, len(documents), body, node))
    except yaml.reader.ReaderError as exc:
        raise ManifestError(f"{source}:{_text_line_col(text, exc.position)}: not valid YAML: "
                            f"character U+{exc.character:04X} is not allowed in YAML "
                            "text") from None
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    except RecursionError:
        raise ManifestError(f"{source}: not valid YAML: nested too deeply (at most "
                            f"{MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    return documents


def read_manifest(path: str | Path) -> list[Document]:
    """`load_bytes` of a file, reading no more than MAX_BYTES + 1 bytes of it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL in the path
        raise ManifestError(f"{path!r}: cannot read: {exc}") from None
    if len(data) > MAX_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, too large for a "
                            "manifest (the API server takes at most 3 MiB per object)")
    return load_bytes(data, str(path))
