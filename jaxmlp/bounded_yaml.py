"""Reading a YAML file (a sweep, a configuration) within bounds: a size limit on the file, a
depth limit and an expansion budget for its aliases, checked before anything is built from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml



class YamlError(ValueError):
    """A YAML file refused: too large, too deep, an alias bomb, a key given twice, not YAML."""

#: Sweep files larger than this are refused before they are parsed.
MAX_FILE_BYTES = 1 << 20
#: YAML aliases (&anchor / *alias) may expand the file to at most this many nodes.
MAX_YAML_NODES = 100_000
#: Lists and mappings may nest at most this deep (a sweep file needs a few levels).
MAX_YAML_DEPTH = 64


def load_bounded_yaml(path: Path) -> Any:
    """yaml.safe_load of a file of at most MAX_FILE_BYTES whose aliases expand to at most
    MAX_YAML_NODES nodes; YAML errors name the file, line and column."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise YamlError(f"{path}: {size:,} bytes; sweep files are limited to {MAX_FILE_BYTES:,} bytes "
                         "(a sweep of many values is better written with random or with ranges in code)")
    try:
        with path.open() as stream:  # a stream, so YAML's error messages name the file, not "<unicode string>"
            return _load(stream, str(path))
    except yaml.YAMLError as err:
        raise YamlError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:  # nested too deep for the YAML reader itself
        raise YamlError(f"{path}: its lists and mappings nest deeper than {MAX_YAML_DEPTH} levels; "
                         "a sweep or configuration file needs a few") from None


def _load(stream, source: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand to more than MAX_YAML_NODES nodes
    (an "anchor bomb" is small on disk and astronomically large once expanded)."""
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _depth(node) > MAX_YAML_DEPTH:
            raise YamlError(f"{source}: its lists and mappings nest deeper than {MAX_YAML_DEPTH} levels; "
                             "a sweep or configuration file needs a few")
        expanded = _expanded_size(node, {})
        if expanded > MAX_YAML_NODES:
            raise YamlError(f"{source}: its YAML aliases (&anchor / *alias) expand to {expanded:,} values, "
                             f"above the limit of {MAX_YAML_NODES:,}; write the values out or use fewer aliases")
        _refuse_duplicate_keys(node, source, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _depth(root: yaml.Node) -> int:
    """How deep lists and mappings nest under `root` (walked without recursion, each node once)."""
    deepest, stack, seen = 0, [(root, 1)], set()
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            continue
        seen.add(id(node))
        deepest = max(deepest, depth)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes of the document under `node` with every alias expanded (shared nodes counted once
    per use, each computed once)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts as one node (safe_load builds a recursive object)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _refuse_duplicate_keys(node: yaml.Node, source: str, seen: set[int]) -> None:
    """A key given twice in one mapping is an error (YAML readers keep the last one silently,
    so a different sweep would train than the one written); named with both lines."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in first:
                    raise YamlError(f"{source}: line {key.start_mark.line + 1}: key {key.value!r} is given twice in "
                                     f"one mapping (first on line {first[key.value].start_mark.line + 1}); "
                                     "keep one (YAML would silently keep the last)")
                first[key.value] = key
            _refuse_duplicate_keys(value, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _refuse_duplicate_keys(child, source, seen)
