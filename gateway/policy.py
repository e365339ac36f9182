"""Who may see a page: the rule for a path, and the identity conditions a protected rule sets.

protect, public and optional share one table, matched on the normalized path, so the longest rule of
the three wins and a rule can never disagree with routing about which path was asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.paths import PrefixTable

if TYPE_CHECKING:
    # Types only: config checks a file's rules with build_rules, so it imports this module.
    from gateway.config import Condition, GatewayConfig


class Access(enum.StrEnum):
    """What a rule asks of a request."""

    PROTECT = "protect"
    PUBLIC = "public"
    OPTIONAL = "optional"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on a dotted field of the validate JSON."""

    field: str
    condition: Condition

    def holds(self, claims: Mapping[str, Any]) -> bool:
        """A missing field fails; comparisons are exact (true is not 1, "1" is not 1)."""
        found, value = lookup(claims, self.field)
        if not found:
            return False
        c = self.condition
        if c.equals is not None:
            return _same(value, c.equals)
        if c.in_ is not None:
            return any(_same(value, allowed) for allowed in c.in_)
        if c.contains is not None:
            return isinstance(value, list) and any(_same(item, c.contains) for item in value)
        return isinstance(value, str) and c.ends_with is not None and value.endswith(c.ends_with)


@dataclass(frozen=True, slots=True)
class Rule:
    """The access a path gets, and for a protected path what its session must satisfy."""

    access: Access
    requirements: tuple[Requirement, ...] = ()

    def unmet(self, claims: Mapping[str, Any]) -> str | None:
        """The first field whose condition fails, or None when all hold."""
        for requirement in self.requirements:
            if not requirement.holds(claims):
                return requirement.field
        return None


PUBLIC_RULE = Rule(Access.PUBLIC)
OPTIONAL_RULE = Rule(Access.OPTIONAL)


def lookup(claims: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    """Follow a dotted path through nested objects: (found, value)."""
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _same(a: Any, b: Any) -> bool:
    # JSON equality: a bool only equals a bool, numbers compare as numbers.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def build_rules(config: GatewayConfig) -> PrefixTable[Rule]:
    """The rule table of a config; paths no rule covers are public."""
    entries: list[tuple[str, Rule]] = [
        (
            rule.prefix,
            Rule(
                Access.PROTECT,
                tuple(Requirement(f, c) for f, c in rule.require.items()),
            ),
        )
        for rule in config.protect
    ]
    entries += [(prefix, PUBLIC_RULE) for prefix in config.public]
    entries += [(prefix, OPTIONAL_RULE) for prefix in config.optional]
    return PrefixTable(entries)
