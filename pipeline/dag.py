"""The stage graph: order, cycles, cache keys, and which stages a run touches.

Order is deterministic: among stages whose inputs are ready, the one written first in the
config goes first. A stage's cache key is sha256 over its kind, the stage class version,
its validated params (defaults included, so adding a default-valued key changes nothing),
its fingerprint (e.g. sizes of raw input files) and its inputs' cache keys, so changing one
stage changes its key and every descendant's, and nothing upstream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


class CycleError(ValueError):
    pass


def topological_order(inputs: dict[str, list[str]], where: str = "config") -> list[str]:
    """Stage names so that every stage comes after its inputs; raise on a cycle."""
    order: list[str] = []
    done: set[str] = set()
    pending = list(inputs)
    while pending:
        ready = [n for n in pending if all(i in done for i in inputs[n])]
        if not ready:
            raise CycleError(f"{where}: stages: cycle: {' -> '.join(_find_cycle(inputs, pending))}")
        first = ready[0]
        order.append(first)
        done.add(first)
        pending.remove(first)
    return order


def _find_cycle(inputs: dict[str, list[str]], candidates: list[str]) -> list[str]:
    # Every candidate waits on another candidate, so walking inputs must revisit a node.
    node, path = candidates[0], []
    while node not in path:
        path.append(node)
        node = next(i for i in inputs[node] if i in candidates)
    cycle = path[path.index(node):] + [node]
    return list(reversed(cycle))  # upstream first: a -> b means b reads a


def cache_key(kind: str, version: int, params: dict[str, Any], fingerprint: Any,
              input_keys: Iterable[str]) -> str:
    blob = json.dumps(
        {
            "kind": kind,
            "version": version,
            "params": params,
            "fingerprint": fingerprint,
            "inputs": list(input_keys),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def descendants(inputs: dict[str, list[str]], roots: Iterable[str]) -> set[str]:
    """`roots` and every stage that reads from them, directly or not."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for name, ins in inputs.items():
            if name not in found and found.intersection(ins):
                found.add(name)
                changed = True
    return found


def ancestors(inputs: dict[str, list[str]], root: str) -> set[str]:
    """`root` and every stage it reads from, directly or not."""
    found, stack = set(), [root]
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(inputs[name])
    return found
