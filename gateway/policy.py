"""Authorization: which tools a principal may see and call, and whether it may use tasks.

Resources, prompts and completions are judged with the same tool globs (``Grant``): a prompt by
its name, which carries its component's prefix like a tool's (``docs_*`` grants the tools and
prompts of component ``docs``); a resource, resource template or completion of a resource
template by the component that serves it, allowed when the globs grant the whole component —
they match its bare prefix ``docs_`` (``docs_*`` and ``*`` do, ``docs_search`` does not).

The rules come from ``[[auth.policy]]`` (``schemas.config.PolicyRule``): a principal may use
the union of the tools of every rule it matches. No policy at all means every authenticated
principal may use every tool. Decisions are made per principal *kind* — the matched rules —
and per tool name, and kept: ``tools/list`` filters a whole catalogue per request, so a
decision must cost a dict lookup, not a glob match.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from gateway.principals import ANONYMOUS, API_KEY_NAMESPACE, JWT_NAMESPACE, Principal
from schemas.config import PolicyRule

_CACHE_LIMIT: Final = 100_000
"""Remembered (rules, tool) decisions; past this the memo starts over."""
_PRINCIPAL_LIMIT: Final = 10_000
"""Remembered principals' grants; past this that memo starts over."""


@dataclass(slots=True)
class Grant:
    """What one principal may do: the rules it matched, decided per tool on first use."""

    rules: tuple[int, ...]
    patterns: re.Pattern[str] | None
    """All tool globs of the matched rules as one regex; ``None``: no tool at all."""
    tasks: bool
    _decided: dict[str, bool] = field(default_factory=dict)

    def allows(self, tool: str) -> bool:
        allowed = self._decided.get(tool)
        if allowed is None:
            allowed = self.patterns is not None and self.patterns.fullmatch(tool) is not None
            if len(self._decided) >= _CACHE_LIMIT:
                self._decided.clear()
            self._decided[tool] = allowed
        return allowed

    def allows_component(self, component: str) -> bool:
        """Whether the globs grant all of ``component`` (match its prefix ``component_``): its
        resources and templates, and completions of its templates."""
        return self.allows(f"{component}_")

    def allows_surface(self, kind: str, name: str, owners: SurfaceOwners) -> bool:
        """Whether a request naming a ``prompt``, ``resource`` (URI) or ``template`` may go on.

        A prompt is judged by its name, as a tool is; a resource or template by the component
        serving it. One nobody serves is refused too, so a refusal says nothing about what exists.
        """
        if kind == "prompt":
            return self.allows(name)
        owner = owners.resource_owner(name) if kind == "resource" else owners.template_owner(name)
        return owner is not None and self.allows_component(owner)


class SurfaceOwners(Protocol):
    """Who serves a resource URI or template (``gateway.surface_mirror.SurfaceMirror``)."""

    def resource_owner(self, uri: str) -> str | None: ...

    def template_owner(self, uri_template: str) -> str | None: ...


EVERYTHING: Final = Grant((), re.compile(".*"), tasks=True)
"""The grant of every principal when no policy is configured (and of ``ANONYMOUS`` with auth off)."""


def _matches(rule: PolicyRule, principal: Principal) -> bool:
    if not principal.scopes.issuperset(rule.scopes):
        return False
    for claim, wanted in rule.claims.items():
        value = principal.claims.get(claim)
        if not (value == wanted or (isinstance(value, list) and wanted in value)):
            return False
    return not rule.subjects or any(subject_matches(glob, principal) for glob in rule.subjects)


def subject_matches(glob: str, principal: Principal) -> bool:
    """Whether a rule's ``subjects`` glob names ``principal``, within the glob's namespace.

    ``key:GLOB`` matches API keys by name; ``jwt:GLOB`` — or a GLOB with no namespace, the form
    older configurations use — matches token subjects; ``anonymous`` the anonymous principal.
    The glob is matched against the credential's own name, never across namespaces, so no token
    ``sub`` (``key:ci-bot`` included) can match a ``key:`` rule, and no key a token rule.
    """
    if glob.startswith(API_KEY_NAMESPACE):
        return principal.method == "api-key" and fnmatch.fnmatchcase(principal.name, glob[len(API_KEY_NAMESPACE) :])
    if glob == ANONYMOUS.subject:
        return principal.method == "none"
    sub_glob = glob[len(JWT_NAMESPACE) :] if glob.startswith(JWT_NAMESPACE) else glob
    return principal.method == "jwt" and fnmatch.fnmatchcase(principal.name, sub_glob)


class Policy:
    """The configured rules, compiled; ``grant`` is what the gateway asks per request."""

    def __init__(self, rules: Sequence[PolicyRule] | None) -> None:
        self._rules = None if rules is None else list(rules)
        self._grants: dict[tuple[int, ...], Grant] = {}
        self._granted: dict[int, tuple[Principal, Grant]] = {}
        """Grants by principal object (the authenticator hands out one per token or API key), so a
        request pays a dict lookup, not a match of every rule; holding the principal keeps its id unique."""

    @property
    def restricts(self) -> bool:
        """False when there is no policy: every principal may use everything."""
        return self._rules is not None

    def grant(self, principal: Principal) -> Grant:
        """What ``principal`` may do."""
        if self._rules is None:
            return EVERYTHING
        known = self._granted.get(id(principal))
        if known is not None and known[0] is principal:
            return known[1]
        matched = tuple(i for i, rule in enumerate(self._rules) if _matches(rule, principal))
        grant = self._grants.get(matched)
        if grant is None:
            globs = [glob for i in matched for glob in self._rules[i].tools]
            pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
            tasks = any(self._rules[i].tasks for i in matched)
            grant = self._grants[matched] = Grant(matched, pattern, tasks)
        if len(self._granted) >= _PRINCIPAL_LIMIT:
            self._granted.clear()
        self._granted[id(principal)] = (principal, grant)
        return grant

    def scopes_granting(self, tool: str) -> list[str]:
        """Scopes that would let a principal call ``tool`` (the ``scope`` of a 403), most specific first."""
        if self._rules is None:
            return []
        found: list[str] = []
        for rule in self._rules:
            if rule.scopes and any(fnmatch.fnmatchcase(tool, glob) for glob in rule.tools):
                found.extend(s for s in rule.scopes if s not in found)
        return found
