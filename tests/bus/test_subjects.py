import pytest

from bus.subjects import Subjects, is_valid_tool_name, micro_control


def test_call_subject_round_trips_the_tool_name() -> None:
    subjects = Subjects("toolbus")
    assert subjects.call("calc_add") == "toolbus.call.calc_add"
    assert subjects.tool_from_call(subjects.call("calc_add")) == "calc_add"


@pytest.mark.parametrize("name", ["a.b", "a b", "a*", "a>", "", "x" * 129, "a\n"])
def test_names_that_cannot_be_one_subject_token_are_refused(name: str) -> None:
    assert not is_valid_tool_name(name)
    with pytest.raises(ValueError):
        Subjects().call(name)


def test_prefix_must_be_one_token() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Subjects("a.b")


def test_every_subject_and_bucket_carries_the_prefix() -> None:
    subjects = Subjects("p1")
    names = [subjects.call_any, subjects.announce, subjects.registry_list, subjects.registry_get]
    assert all(n.startswith("p1.") for n in names)
    assert subjects.tools_bucket.startswith("p1_")
    assert subjects.workers_bucket.startswith("p1_")


def test_micro_discovery_subjects_follow_the_micro_protocol() -> None:
    # What `nats micro ls/info/stats` request: every service, every instance of one, one instance.
    assert micro_control("PING") == "$SRV.PING"
    assert micro_control("INFO", "toolbus-worker") == "$SRV.INFO.toolbus-worker"
    assert micro_control("STATS", "toolbus-worker", "host-1-abc") == "$SRV.STATS.toolbus-worker.host-1-abc"
    with pytest.raises(ValueError, match="verb"):
        micro_control("HELLO")
    with pytest.raises(ValueError, match="token"):
        micro_control("INFO", "a.b")


@pytest.mark.parametrize("token", ["x\n", "worker-1\n"])
def test_a_token_with_a_trailing_newline_is_not_a_token(token: str) -> None:
    # Attack: ``^...$`` lets one trailing "\n" through (Python's "$"), so a client's task id
    # ``"x\n"`` in tasks/result became a subject only nats-py's own check stopped; every token
    # check (resume, surface, call events, task status, cancel) now refuses it.
    subjects = Subjects("toolbus")
    for build in (subjects.task_status, subjects.resume, subjects.surface, subjects.call_events, subjects.cancel):
        with pytest.raises(ValueError):
            build(token)
    assert not subjects.is_call_events(f"toolbus.call_events.{token}")
