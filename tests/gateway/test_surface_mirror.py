"""The gateway's index of resources, templates and prompts (no NATS): who serves a URI, what two
components claiming one URI get, paging, and which lists a change touches."""

from __future__ import annotations

import time

import pytest

from gateway.errors import InvalidCursor
from gateway.surface_mirror import SurfaceMirror, template_matches
from schemas.wire import ComponentSurface, PromptDescriptor, ResourceDescriptor, ResourceTemplateDescriptor


def surface(
    component: str, *uris: str, templates: tuple[str, ...] = (), prompts: tuple[str, ...] = ()
) -> ComponentSurface:
    return ComponentSurface(
        component=component,
        resources=[ResourceDescriptor(uri=uri, name=uri) for uri in uris],
        templates=[ResourceTemplateDescriptor(uri_template=t, name=t) for t in templates],
        prompts=[PromptDescriptor(name=f"{component}_{p}", guest_name=p) for p in prompts],
    )


def test_a_fixed_uri_wins_over_a_template_and_templates_match_one_segment_per_variable() -> None:
    mirror = SurfaceMirror()
    mirror.replace(
        [
            surface("docs", "docs://item/readme", templates=("docs://item/{id}",)),
            surface("notes", templates=("notes://{a}/{b}",)),
        ]
    )
    assert mirror.resource_owner("docs://item/readme") == "docs"
    assert mirror.resource_owner("docs://item/42") == "docs"
    assert mirror.resource_owner("docs://item/4/2") is None  # {id} never spans a "/"
    assert mirror.resource_owner("notes://x/y") == "notes"
    assert mirror.resource_owner("notes://x") is None
    assert mirror.template_owner("docs://item/{id}") == "docs"
    assert template_matches("a+b://{x}.txt", "a+b://1.txt")  # the rest is literal
    assert not template_matches("a+b://{x}.txt", "aab://1.txt")


def test_two_components_claiming_one_uri_the_first_by_name_serves_it() -> None:
    mirror = SurfaceMirror()
    mirror.replace([surface("zeta", "shared://x"), surface("alpha", "shared://x", "alpha://only")])
    assert mirror.resource_owner("shared://x") == "alpha"
    page = mirror.resources.page(None, 10, None)
    assert [(e.key, e.component) for e in page.entries] == [("alpha://only", "alpha"), ("shared://x", "alpha")]
    mirror.remove("alpha")
    assert mirror.resource_owner("shared://x") == "zeta"  # the other claimant takes over


def test_lists_page_after_a_key_and_refuse_a_foreign_cursor() -> None:
    mirror = SurfaceMirror()
    mirror.put(surface("c", "c://1", "c://2", "c://3"))
    first = mirror.resources.page(None, 2, None)
    assert [e.key for e in first.entries] == ["c://1", "c://2"]
    assert first.next_cursor is not None
    second = mirror.resources.page(first.next_cursor, 2, None)
    assert [e.key for e in second.entries] == ["c://3"] and second.next_cursor is None
    with pytest.raises(InvalidCursor):
        mirror.resources.page("bm90LWEtY3Vyc29y", 2, None)
    allowed = mirror.resources.page(None, 1, lambda entry: entry.key != "c://1")
    assert [e.key for e in allowed.entries] == ["c://2"] and allowed.next_cursor is not None


def test_a_change_names_the_lists_it_touched() -> None:
    mirror = SurfaceMirror()
    heard: list[frozenset[str]] = []
    mirror.subscribe(heard.append)
    mirror.put(surface("c", "c://1"))
    mirror.put(surface("c", "c://1", prompts=("p",)))
    mirror.put(surface("c", "c://1", prompts=("p",)))  # unchanged: nothing
    mirror.remove("c")
    assert heard == [frozenset({"resources"}), frozenset({"prompts"}), frozenset({"resources", "prompts"})]
    assert mirror.prompt("c_p") is None


def test_a_template_of_many_variables_cannot_stall_the_gateway() -> None:
    # Attack: a tenant's component lists templates whose variables sit side by side or between
    # separators they can also match; any client then sends a URI that almost matches. The
    # backtracking regex behind resource_owner (asked by the front door on every read, before
    # policy) took 53 s for a 44-character URI, with the gateway's event loop stalled.
    adjacent = "x://" + "".join(f"{{v{i}}}" for i in range(12)) + "/z"
    separated = "y://" + "-".join(f"{{v{i}}}" for i in range(12)) + "/z"
    mirror = SurfaceMirror()
    mirror.replace([surface("evil", templates=(adjacent, separated))])
    started = time.perf_counter()
    assert mirror.resource_owner("x://" + "a" * 100_000) is None
    assert mirror.resource_owner("y://" + "-" * 100_000) is None
    assert time.perf_counter() - started < 1.0
    # and what they stand for still matches: each variable one or more characters, no "/"
    assert mirror.resource_owner("x://" + "a" * 12 + "/z") == "evil"
    assert mirror.resource_owner("x://" + "a" * 11 + "/z") is None
    assert mirror.resource_owner("y://" + "-".join("a" * 12) + "/z") == "evil"
    assert mirror.resource_owner("y://" + "-" * 23 + "/z") == "evil"  # a variable may be "-"
    assert mirror.resource_owner("y://" + "-" * 22 + "/z") is None


@pytest.mark.parametrize(
    ("template", "uri", "matches"),
    [
        ("a+b://{x}.txt", "a+b://1.txt", True),
        ("a+b://{x}.txt", "aab://1.txt", False),
        ("a+b://{x}.txt", "a+b://.txt", False),
        ("t://{a}/{b}", "t://x/y", True),
        ("t://{a}/{b}", "t://x/y/z", False),
        ("t://{a}/{b}", "t://x/", False),
        ("t://{a}{b}.{c}", "t://ab.c", True),
        ("t://{a}{b}.{c}", "t://a.c", False),
        ("t://{a}.{b}", "t://a.b.c", True),
        ("t://{a}x", "t://xx", True),
        ("t://{a}x", "t://x", False),
        ("t://fixed", "t://fixed", True),
        ("t://fixed", "t://fixed/", False),
        ("t://{a/b}", "t://q", True),
    ],
)
def test_template_matching_is_rfc_6570_level_1(template: str, uri: str, matches: bool) -> None:
    assert template_matches(template, uri) is matches
