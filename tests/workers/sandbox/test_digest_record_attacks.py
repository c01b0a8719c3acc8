"""Attacks on the digest records: a worker must never serve code other than the bytes now in its file.

Each test is one attempt to make a load trust a remembered digest (and so a compiled form) for a
file whose bytes have changed, or to make an odd file or record crash or hang the load; four of
them found holes that were then closed (a file changed through a writable mapping, a non-UTF-8
path, a FIFO where a record goes, an error naming the wrong offset). The files sit in the cache
directory itself (``cache = tmp_path``), where toolbus keeps what it builds: only files there get
records. Real files, real wasmtime loads; only hooks between the load's steps (to change the
file at the worst moment), never a mock of wasmtime or of the filesystem.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import pytest
import wasmtime

from bus.replies import MESSAGE_MAX_CHARS, error_reply
from schemas.errors import ErrorCode
from tests.workers.sandbox.test_digest_records import (
    BIG_COMMAND_WAT,
    SETTLE_S,
    component_wat,
    constant_component,
    load,
    load_command,
    quick_settling,  # noqa: F401 (autouse: a file settles in 10 ms here too)
    served,
    write_settled,
)
from workers.sandbox import component as component_module
from workers.sandbox import digest_records
from workers.sandbox.compile_cache import wasm_digest
from workers.sandbox.engine import EngineHost
from workers.sandbox.errors import ComponentLoadError
from workers.toolchains.wit_docs import DOCS_SECTION, docs_section, read_docs
from workers.wasm_sections import custom_section, find_custom_section

MIN = digest_records.RECORD_MIN_BYTES


def as_now(path: Path) -> tuple[object, str, str]:
    """What a load must serve for ``path``: what its current bytes say."""
    wasm = path.read_bytes()
    value = 1 if wasm == constant_component(1) else 2 if wasm == constant_component(2) else None
    return value, wasm_digest(wasm), f"Returns {value}."


# --- changes that keep size and modification time ---------------------------------------------


def keep_times(path: Path, change: Callable[[], None]) -> None:
    """Run ``change`` and put the file's old modification time back (size is kept by the caller)."""
    before = path.stat()
    change()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def truncate_and_rewrite(path: Path, wasm: bytes) -> None:
    def change() -> None:
        with path.open("r+b") as file:
            file.truncate(0)
            file.write(wasm)

    keep_times(path, change)


def write_through_hard_link(path: Path, wasm: bytes) -> None:
    """The bytes change through another name of the same inode, made before the record was."""
    other = path.with_name("other-name.wasm")
    keep_times(other, lambda: other.write_bytes(wasm))


def unlink_and_recreate(path: Path, wasm: bytes) -> None:
    """A new file at the path, likely on the inode number just freed (ext4 reuses them)."""
    before = path.stat()
    path.unlink()
    path.write_bytes(wasm)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def retarget_symlink(path: Path, wasm: bytes) -> None:
    """The configured path is a symlink; it is pointed (atomically) at another settled file."""
    before = path.stat()
    target = write_settled(path.with_name("v2.wasm"), wasm)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(SETTLE_S)
    staged = path.with_name("staged-link")
    staged.symlink_to(target.name)
    staged.replace(path)


def prepare(tmp_path: Path, change: Callable[[Path, bytes], None]) -> Path:
    """The configured path, holding ``constant_component(1)`` (as a symlink for ``retarget_symlink``)."""
    path = tmp_path / "big.wasm"
    if change is retarget_symlink:
        write_settled(tmp_path / "v1.wasm", constant_component(1))
        path.symlink_to("v1.wasm")
    else:
        write_settled(path, constant_component(1))
    if change is write_through_hard_link:
        os.link(path, path.with_name("other-name.wasm"))
        time.sleep(SETTLE_S)  # linking changed the inode's ctime: let it settle again
    return path


@pytest.mark.parametrize(
    "change", [truncate_and_rewrite, write_through_hard_link, unlink_and_recreate, retarget_symlink]
)
def test_a_replacement_keeping_size_and_mtime_is_loaded_as_it_is_now(
    engine_host: EngineHost, tmp_path: Path, change: Callable[[Path, bytes], None]
) -> None:
    """Swap a recorded file's bytes by another route than the existing tests (truncation, another
    hard link, a new file on a reused inode, a retargeted symlink), keeping size and mtime: the
    record must not hold, and the load must serve the new bytes (and their docs)."""
    path = prepare(tmp_path, change)
    cache = tmp_path
    assert served(load(engine_host, path, cache)) == as_now(path)
    assert digest_records.recall(cache, path) is not None

    before = path.stat()
    change(path, constant_component(2))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert digest_records.recall(cache, path) is None
    assert (
        served(load(engine_host, path, cache)) == as_now(path) == (2, wasm_digest(constant_component(2)), "Returns 2.")
    )
    if change is write_through_hard_link:  # the other name, loaded on its own, sees the same bytes
        other = path.with_name("other-name.wasm")
        assert served(load(engine_host, other, cache)) == as_now(other)


def test_two_files_with_one_content_keep_separate_records(engine_host: EngineHost, tmp_path: Path) -> None:
    """Two paths with identical bytes share a compiled form; changing one (size and mtime kept)
    must not let the other's record, or the shared compiled entry, answer for it."""
    cache = tmp_path
    one = write_settled(tmp_path / "one.wasm", constant_component(1))
    two = write_settled(tmp_path / "two.wasm", constant_component(1))
    assert served(load(engine_host, one, cache)) == served(load(engine_host, two, cache)) == as_now(one)
    truncate_and_rewrite(two, constant_component(2))
    assert served(load(engine_host, two, cache)) == as_now(two)
    assert served(load(engine_host, one, cache)) == as_now(one)


# --- a change in the middle of a load ---------------------------------------------------------


def replace_by_rename(path: Path, wasm: bytes) -> None:
    """A new inode, the same size, the old modification time."""
    before = path.stat()
    new = path.with_name("incoming.tmp")
    new.write_bytes(wasm)
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    new.replace(path)


def change_after_recall(monkeypatch: pytest.MonkeyPatch, wasm: bytes) -> None:
    """The file is replaced just after the load has recalled its digest (the worst moment)."""
    real_recall = digest_records.recall

    def recall(cache_dir: Path, path: Path) -> tuple[str, os.stat_result] | None:
        recalled = real_recall(cache_dir, path)
        assert recalled is not None, "the attack needs a recalled digest"
        replace_by_rename(path, wasm)
        return recalled

    monkeypatch.setattr(digest_records, "recall", recall)


@pytest.mark.parametrize("compiled", ["present", "missing"])
def test_a_change_after_recall_never_serves_or_caches_the_old_code(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: str
) -> None:
    """The file is replaced between ``recall`` and the compile. With the compiled form present it
    loads from the old digest, so the docs read must notice; with it missing the bytes are read and
    must be found to disagree, and the new code must not be cached under the old digest."""
    path = write_settled(tmp_path / "big.wasm", constant_component(1))
    cache = tmp_path
    load(engine_host, path, cache)
    if compiled == "missing":
        shutil.rmtree(cache / "compiled")

    with monkeypatch.context() as patch:
        change_after_recall(patch, constant_component(2))
        with pytest.raises(ComponentLoadError, match="changed while it was loading"):
            load(engine_host, path, cache)

    # Loaded again, each file serves its own bytes: the compile cache holds nothing mixed up.
    assert served(load(engine_host, path, cache)) == as_now(path)
    original = write_settled(tmp_path / "original.wasm", constant_component(1))
    assert served(load(engine_host, original, cache)) == as_now(original)


def test_a_file_replaced_by_garbage_before_its_docs_are_read_fails_the_load(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaced by non-Wasm bytes after ``recall``, the file makes the docs walk raise ValueError,
    which the load forgives (docs are optional): the identity check before the walk must fail the
    load first, or the old compiled code is served for a file that holds garbage."""
    path = write_settled(tmp_path / "big.wasm", constant_component(1))
    cache = tmp_path
    load(engine_host, path, cache)
    change_after_recall(monkeypatch, b"garbage!" * (path.stat().st_size // 8 + 1))
    with pytest.raises(ComponentLoadError, match="changed while it was loading"):
        load(engine_host, path, cache)


def test_a_change_while_the_docs_are_read_fails_the_load(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is rewritten in place (same inode, size and mtime) after the docs walk opened it
    and before it read: the docs would be the new file's and the code the old one's. The check
    after the walk must fail the load."""
    path = write_settled(tmp_path / "big.wasm", constant_component(1))
    cache = tmp_path
    load(engine_host, path, cache)

    def read_docs_mid_change(wasm: bytes | BinaryIO) -> dict[str, Any]:
        assert not isinstance(wasm, bytes), "the attack needs the walk over the file"
        truncate_and_rewrite(path, constant_component(2))
        return read_docs(wasm)

    monkeypatch.setattr(component_module, "read_docs", read_docs_mid_change)
    with pytest.raises(ComponentLoadError, match="changed while it was loading"):
        load(engine_host, path, cache)


def test_a_command_changed_after_recall_fails_the_load(
    engine_host: EngineHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command module replaced by another (same size and mtime) after ``recall``, its compiled
    form present: the preamble read is the last look at the file before the compiled form is
    used, so it must notice."""
    padding = custom_section("padding", bytes(MIN))
    path = write_settled(tmp_path / "cmd.wasm", bytes(wasmtime.wat2wasm(BIG_COMMAND_WAT)) + padding)
    cache = tmp_path
    load_command(engine_host, path, cache)
    other = bytes(wasmtime.wat2wasm(BIG_COMMAND_WAT.replace("_start", "_start_"))) + padding
    change_after_recall(monkeypatch, other[: path.stat().st_size].ljust(path.stat().st_size, b"\0"))
    with pytest.raises(ComponentLoadError, match="changed while it was loading"):
        load_command(engine_host, path, cache)


# --- when a record is written, and where ------------------------------------------------------


def test_a_backdated_mtime_does_not_make_a_fresh_file_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written just now and given an mtime an hour old, the file has not settled: its ctime says
    so. A record keyed by the mtime alone could match a second write in the same clock tick."""
    monkeypatch.setattr(digest_records, "SETTLED_NS", 1_000_000_000)
    path = tmp_path / "big.wasm"
    path.write_bytes(constant_component(1))
    hour_ago = time.time_ns() - 3_600 * 10**9
    os.utime(path, ns=(hour_ago, hour_ago))
    cache = tmp_path
    digest_records.read(cache, path)
    assert digest_records.recall(cache, path) is None
    assert not (cache / "digests").exists()


def test_the_record_threshold_is_exactly_record_min_bytes(engine_host: EngineHost, tmp_path: Path) -> None:
    """A file of exactly ``RECORD_MIN_BYTES`` gets a record (and still loads right twice); one
    byte less does not."""
    cache = tmp_path
    sizes = {}
    for size in (MIN - 1, MIN):
        padding = size - len(constant_component(1, padding=0))
        while len(constant_component(1, padding)) > size:  # the padding's own size grows its header
            padding -= 1
        wasm = constant_component(1, padding)
        assert len(wasm) == size
        sizes[size] = write_settled(tmp_path / f"{size}.wasm", wasm)
        digest_records.read(cache, sizes[size])
    assert digest_records.recall(cache, sizes[MIN - 1]) is None
    assert digest_records.recall(cache, sizes[MIN]) is not None
    exact = sizes[MIN]
    assert served(load(engine_host, exact, cache))[:2] == (1, wasm_digest(exact.read_bytes()))
    assert served(load(engine_host, exact, cache))[:2] == (1, wasm_digest(exact.read_bytes()))


def test_a_record_path_taken_by_a_directory_costs_only_the_record(engine_host: EngineHost, tmp_path: Path) -> None:
    """A directory where the record should be: the record is neither read nor written (both fail
    with an OSError), and every load still serves the file's bytes."""
    path = write_settled(tmp_path / "big.wasm", constant_component(1))
    cache = tmp_path
    digest_records._record_path(cache, path).mkdir(parents=True)
    for _ in range(2):
        assert served(load(engine_host, path, cache)) == as_now(path)
    assert digest_records.recall(cache, path) is None


def test_a_record_for_a_symlink_is_the_targets_identity_not_the_links(engine_host: EngineHost, tmp_path: Path) -> None:
    """A record taken through a symlink describes the file it pointed at: pointing the link at a
    file with another record, and back, never lets either record answer for the other file."""
    cache = tmp_path
    v1 = write_settled(tmp_path / "v1.wasm", constant_component(1))
    v2 = write_settled(tmp_path / "v2.wasm", constant_component(2))
    link = tmp_path / "current.wasm"
    for target in (v1, v2, v1, v2):
        staged = tmp_path / "staged-link"
        staged.symlink_to(target.name)
        staged.replace(link)
        for path in (link, target):
            assert served(load(engine_host, path, cache)) == as_now(path)


# --- holes --------------------------------------------------------------------------------------


def test_a_file_changed_through_a_writable_mapping_is_not_served_stale(engine_host: EngineHost, tmp_path: Path) -> None:
    """A process keeps the file mapped shared and writable (a long-running tool, an editor, a
    linker writing in place). Its first write marks the page dirty and sets ctime; the file then
    settles; a second write to the same page changes the code and no time at all (the kernel
    updates file times on the write fault, which a dirty writable page does not take). A record
    would match the file still, so a user's file (outside the cache directory) gets none, and the
    next load serves the bytes now in the file."""
    one, two = constant_component(1), constant_component(2)
    [code_at] = [i for i in range(len(component_wat(1))) if one[i] != two[i]]
    assert code_at < mmap.PAGESIZE
    path = tmp_path / "big.wasm"
    with path.open("wb") as file:
        file.write(one)
        file.flush()
        os.fsync(file.fileno())  # blocks allocated: a journal commit has no reason to write the page back
    cache = tmp_path / "cache"  # the user's file is outside it
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        mapped[code_at] = mapped[code_at]  # the write fault: ctime set, the page now dirty and writable
        time.sleep(SETTLE_S)
        assert served(load(engine_host, path, cache))[0] == 1
        assert digest_records.recall(cache, path) is None
        before = path.stat()
        mapped[code_at] = two[code_at]
        after = path.stat()
        if (after.st_ctime_ns, after.st_mtime_ns) != (before.st_ctime_ns, before.st_mtime_ns):
            pytest.skip("the page was written back in between, so the write took a fault and set ctime")
        assert path.read_bytes()[: len(component_wat(2))] == component_wat(2)
        value, digest, _ = served(load(engine_host, path, cache))
        assert (value, digest) == (2, wasm_digest(path.read_bytes()))


def test_a_settled_component_at_a_non_utf8_path_loads(engine_host: EngineHost, tmp_path: Path) -> None:
    """A directory named in Latin-1 (``os.fsdecode`` gives a surrogate escape): the load must work
    as it did before records (or fail with a ComponentLoadError), never raise UnicodeEncodeError."""
    directory = tmp_path / os.fsdecode(b"t\xf6ols")
    directory.mkdir()
    path = write_settled(directory / "big.wasm", constant_component(1))
    cache = tmp_path
    for _ in range(2):
        assert served(load(engine_host, path, cache)) == as_now(path)


def test_a_fifo_at_the_record_path_does_not_hang_recall(tmp_path: Path) -> None:
    """An odd record (a FIFO left where the record goes) must cost the record, not hang the load."""
    path = write_settled(tmp_path / "big.wasm", constant_component(1))
    cache = tmp_path
    record = digest_records._record_path(cache, path)
    record.parent.mkdir(parents=True)
    os.mkfifo(record)
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(digest_records.recall(cache, path)), daemon=True)
    reader.start()
    reader.join(1.0)
    hung = reader.is_alive()
    while reader.is_alive():  # unblock it: a writer opens the FIFO and closes it, the reader sees EOF
        try:
            os.close(os.open(record, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            time.sleep(0.01)
        reader.join(0.1)
    assert not hung
    assert results == [None]


# --- the section walk over a file against the walk over memory --------------------------------

EMPTY_COMPONENT = b"\0asm\x0d\x00\x01\x00"


def outcome(find: Callable[[], bytes | None]) -> object:
    try:
        return ("found", find())
    except ValueError as exc:
        return ("ValueError", str(exc))


def walks(file: BinaryIO, wasm: bytes) -> tuple[object, object]:
    """The result of finding the docs section in ``wasm``, in memory and through ``file``."""
    file.seek(0)
    file.truncate()
    file.write(wasm)
    file.flush()
    file.seek(0)
    return (
        outcome(lambda: find_custom_section(memoryview(wasm), DOCS_SECTION)),
        outcome(lambda: find_custom_section(file, DOCS_SECTION)),
    )


NAME = DOCS_SECTION.encode()
ODD_BINARIES = {
    "empty": b"",
    "preamble only": EMPTY_COMPONENT,
    "cut preamble": EMPTY_COMPONENT[:6],
    "size LEB128 runs off the end": EMPTY_COMPONENT + b"\x00\x80\x80",
    "size LEB128 longer than 5 bytes": EMPTY_COMPONENT + b"\x00\x80\x80\x80\x80\x80\x01",
    "a section claiming 4 GiB": EMPTY_COMPONENT + b"\x00\x80\x80\x80\x80\x10" + bytes(64),
    "a section claiming 2**35 - 1": EMPTY_COMPONENT + b"\x01\xff\xff\xff\xff\x7f" + bytes(64),
    "a zero-size custom section, last": EMPTY_COMPONENT + b"\x00\x00",
    "a zero-size custom section, then docs": EMPTY_COMPONENT + b"\x00\x00" + docs_section({}),
    "a name longer than its section": EMPTY_COMPONENT + b"\x00\x03\x0c" + NAME[:2],
    "a name claiming 4 GiB": EMPTY_COMPONENT + b"\x00\x06\x80\x80\x80\x80\x10\x00",
    "a name LEB128 cut by its section": EMPTY_COMPONENT + b"\x00\x01\x80" + docs_section({}),
    "docs with a 5-byte name length": EMPTY_COMPONENT + b"\x00\x13\x8c\x80\x80\x80\x00" + NAME + b"{}",
    "docs with a 5-byte section size": EMPTY_COMPONENT + b"\x00\x8f\x80\x80\x80\x00\x0c" + NAME + b"{}",
    "docs with an empty payload": EMPTY_COMPONENT + custom_section(DOCS_SECTION, b""),
    "docs whose name is a prefix": EMPTY_COMPONENT + custom_section(DOCS_SECTION[:-1], b"{}"),
    "two docs sections": EMPTY_COMPONENT + custom_section(DOCS_SECTION, b"1") + custom_section(DOCS_SECTION, b"2"),
    "docs after a cut section": EMPTY_COMPONENT + custom_section(DOCS_SECTION, b"{}")[:-1],
    "a non-UTF-8 name": EMPTY_COMPONENT + b"\x00\x04\x02\xff\xfe\x00" + docs_section({}),
}


def random_binary(rng: random.Random) -> bytes:
    """A binary of random sections (docs among them), then perhaps cut or with a byte changed."""
    parts = [EMPTY_COMPONENT]
    for _ in range(rng.randrange(6)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(custom_section(DOCS_SECTION, rng.randbytes(rng.randrange(40))))
        elif kind == 1:
            name = rng.choice([DOCS_SECTION[: rng.randrange(13)], "x" * rng.randrange(30), DOCS_SECTION + "s"])
            parts.append(custom_section(name, rng.randbytes(rng.randrange(300))))
        elif kind == 2:
            parts.append(bytes([rng.randrange(1, 13), 3]) + rng.randbytes(3))
        else:
            parts.append(rng.randbytes(rng.randrange(1, 8)))
    wasm = bytearray(b"".join(parts))
    mutation = rng.randrange(4)
    if mutation == 0 and len(wasm) > 1:
        del wasm[rng.randrange(len(wasm)) :]
    elif mutation == 1 and len(wasm) > 8:
        wasm[rng.randrange(8, len(wasm))] = rng.randrange(256)
    return bytes(wasm)


def test_the_docs_walk_over_a_file_agrees_with_the_walk_over_memory(tmp_path: Path) -> None:
    """Malformed and odd binaries (LEB128 overruns, names past their section, zero-size custom
    sections, sections claiming gigabytes) and a few thousand random ones: the walk over the file
    must give the same payload or the same ValueError as the walk over the bytes, and nothing else
    (no IndexError, no huge read, no hang)."""
    with (tmp_path / "odd.wasm").open("w+b") as file:
        for name, wasm in ODD_BINARIES.items():
            in_memory, in_file = walks(file, wasm)
            assert in_file == in_memory, name
        assert walks(file, ODD_BINARIES["docs with a 5-byte name length"])[1] == ("found", b"{}")
        assert walks(file, ODD_BINARIES["docs with a 5-byte section size"])[1] == ("found", b"{}")
        assert walks(file, ODD_BINARIES["two docs sections"])[1] == ("found", b"1")
        assert walks(file, ODD_BINARIES["a section claiming 4 GiB"])[1][0] == "ValueError"
        rng = random.Random(17)
        found = failed = 0
        for _ in range(3000):
            wasm = random_binary(rng)
            in_memory, in_file = walks(file, wasm)
            assert in_file == in_memory, wasm
            found += in_memory[0] == "found" and in_memory[1] is not None
            failed += in_memory[0] == "ValueError"
        assert found > 100 and failed > 100  # both kinds of outcome were exercised


def test_a_zero_size_custom_section_is_reported_where_it_is() -> None:
    """A zero-size custom section at byte 8 (its payload at byte 10), with more sections after it:
    the error must say where it is, not 'byte 0 ... past the end of the binary'."""
    wasm = EMPTY_COMPONENT + b"\x00\x00" + docs_section({})
    with pytest.raises(ValueError) as raised:
        find_custom_section(memoryview(wasm), DOCS_SECTION)
    assert "byte 0 " not in str(raised.value)
    assert "byte 8" in str(raised.value) or "byte 10" in str(raised.value)


# --- error replies ------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["x", "\x00", "\u2028", "\U0001f600"])
def test_a_huge_error_message_gives_a_small_reply(char: str) -> None:
    """A message quoting a 4 MB request, in the characters that grow most in JSON (escaped control
    characters, 4-byte UTF-8): the reply stays small and decodes, with the message's start kept and
    the cut said; a message of exactly the limit is kept whole."""
    body, headers = error_reply(ErrorCode.BAD_REQUEST, "unknown tool " + char * 4_000_000)
    assert len(body) < 8 * 1024
    message = json.loads(body)["error"]["message"]
    assert message.startswith("unknown tool " + char * 100)
    assert message.endswith(f"({13 + 4_000_000 - MESSAGE_MAX_CHARS} characters cut)")
    assert headers

    whole = char * MESSAGE_MAX_CHARS
    assert msgspec.json.decode(error_reply(ErrorCode.BAD_REQUEST, whole)[0])["error"]["message"] == whole
