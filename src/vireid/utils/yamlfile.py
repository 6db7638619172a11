"""The YAML reader of every YAML file and value vireid reads from the user (config files,
``KEY=VALUE`` override values, a list data set's ``vireid-list.yaml``): PyYAML's safe loader,
refusing what it would otherwise accept silently or at any cost (a key given twice, an alias
expansion without bound).
"""
from __future__ import annotations

from typing import Any

import yaml

from vireid.errors import ConfigError
from vireid.utils.messages import echo


#: Most nodes a YAML text may expand to, an alias (``*a``) counted at the full size of what
#: it names. A complete config has about 150; a "billion laughs" file needs millions, and
#: would otherwise be expanded by the type checks (and echoed in their messages).
MAX_YAML_NODES = 10_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise accept silently or at any cost:
    a key given twice in one mapping (the safe loader keeps the last), and a text whose
    aliases expand past :data:`MAX_YAML_NODES` nodes (or refer to themselves). Refusals are
    ConfigErrors without the file name; :func:`load_yaml` adds it."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            # `<<: *base` merges are YAML's way of extending a mapping, not a duplicate.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            key = (key_node.tag, key_node.value)
            if key in first:
                raise ConfigError(f"key {echo(key_node.value)} is given twice in one mapping "
                                  f"(line {first[key]} and line {line}); expected each key "
                                  f"once (YAML would keep the last silently)")
            first[key] = line
        return node

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose expansion (aliases counted at full size) passes
    :data:`MAX_YAML_NODES`, or that contains itself. Linear in the number of distinct nodes:
    each node's expanded size is computed once (iteratively: no recursion limit)."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    size: dict[int, int] = {}
    open_nodes: set[int] = set()  # entered, children not done: on the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            size[nid] = 1 + sum(size[id(c)] for c in children(node))
            open_nodes.discard(nid)
            if size[nid] > MAX_YAML_NODES:
                raise ConfigError(f"expected at most {MAX_YAML_NODES:,} YAML nodes once "
                                  f"aliases (*name) are expanded, found more (a config holds "
                                  f"a few hundred): refusing to expand it")
            continue
        if nid in size:
            continue
        if nid in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(f"expected aliases (*name) that name finished nodes, found an "
                              f"anchor used inside itself (line {line})")
        open_nodes.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with :class:`_BoundedLoader`'s refusals (a duplicate key, an
    expansion past :data:`MAX_YAML_NODES`) raised as ConfigErrors that start with ``where``
    (a file name, or the override). YAML syntax errors propagate as ``yaml.YAMLError``."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    finally:
        loader.dispose()
