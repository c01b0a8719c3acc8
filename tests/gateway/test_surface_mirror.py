"""The gateway's index of resources, templates and prompts (no NATS): who serves a URI, what two
components claiming one URI get, paging, and which lists a change touches."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidCursor
from gateway.surface_mirror import SurfaceMirror, template_pattern
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
    assert template_pattern("a+b://{x}.txt").fullmatch("a+b://1.txt")  # the rest is literal
    assert not template_pattern("a+b://{x}.txt").fullmatch("aab://1.txt")


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
