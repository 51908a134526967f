"""The capture store: bodies kept byte for byte, the index one to one, repair after a kill."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import torch

from splitleak.runtime.capture import (
    INDEX,
    REQUESTS,
    CaptureError,
    CaptureStore,
    read_index,
    repair,
    verify,
)
from splitleak.runtime.wire import encode_features


def a_body(seed: int) -> bytes:
    z = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(seed))
    return encode_features(z, model="net", split="ReLU2", defenses=["dropout:features:0.5"])


def test_record_keeps_the_body_byte_for_byte_and_indexes_it(tmp_path):
    store = CaptureStore(tmp_path / "cap")
    body = a_body(0)
    entry = store.record(body, "r1", client="127.0.0.1:5")
    store.close()
    assert (tmp_path / "cap" / entry["file"]).read_bytes() == body
    [line] = read_index(tmp_path / "cap")
    assert line == entry
    assert line["sha256"] == hashlib.sha256(body).hexdigest() and line["bytes"] == len(body)
    assert line["split"] == "ReLU2" and json.loads(line["defense"]) == ["dropout:features:0.5"]
    assert line["client"] == "127.0.0.1:5"
    assert not list((tmp_path / "cap" / REQUESTS).glob(".*"))  # no temporary leftovers


def test_concurrent_records_stay_one_to_one(tmp_path):
    store = CaptureStore(tmp_path)
    bodies = {f"r{i}": a_body(i) for i in range(40)}

    def worker(ids: list[str]) -> None:
        for rid in ids:
            store.record(bodies[rid], rid)

    ids = sorted(bodies)
    threads = [threading.Thread(target=worker, args=(ids[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    store.close()
    entries = read_index(tmp_path)
    assert sorted(e["request_id"] for e in entries) == ids
    files = sorted(p.stem for p in (tmp_path / REQUESTS).glob("*.safetensors"))
    assert files == ids
    for e in entries:
        assert (tmp_path / e["file"]).read_bytes() == bodies[e["request_id"]]


def test_one_server_per_capture_directory(tmp_path):
    first = CaptureStore(tmp_path)
    with pytest.raises(CaptureError, match="in use by another server"):
        CaptureStore(tmp_path)
    first.close()
    CaptureStore(tmp_path).close()  # released: a restarted server opens it


def test_repair_after_a_kill_restores_one_to_one(tmp_path):
    store = CaptureStore(tmp_path)
    store.record(a_body(0), "done")
    store.close()
    requests = tmp_path / REQUESTS
    # What a SIGKILL can leave: a half-written temporary file, a file renamed into place
    # whose index line was never written, and a torn last index line.
    orphan = a_body(2)
    (requests / ".half.safetensors.x1.tmp").write_bytes(a_body(1)[:50])
    (requests / "orphan.safetensors").write_bytes(orphan)
    with (tmp_path / INDEX).open("ab") as f:
        f.write(b'{"request_id": "torn", "fi')
    report = repair(tmp_path)
    assert report.partial_files_removed == 1 and report.torn_index_lines == 1
    assert report.orphans_indexed == ["orphan"] and report.missing_files == []
    entries = read_index(tmp_path)
    assert [e["request_id"] for e in entries] == ["done", "orphan"]
    assert entries[1]["recovered"] is True
    assert entries[1]["sha256"] == hashlib.sha256(orphan).hexdigest()
    assert sorted(p.name for p in requests.iterdir()) == ["done.safetensors", "orphan.safetensors"]
    assert repair(tmp_path).clean()  # idempotent


def test_read_index_skips_only_a_torn_last_line(tmp_path):
    store = CaptureStore(tmp_path)
    store.record(a_body(0), "a")
    store.close()
    index = tmp_path / INDEX
    index.write_bytes(index.read_bytes() + b'{"request_id": "b"')  # torn: no newline
    assert [e["request_id"] for e in read_index(tmp_path)] == ["a"]
    index.write_bytes(b"not json\n" + index.read_bytes())
    with pytest.raises(CaptureError, match="line 1 is not a capture entry"):
        read_index(tmp_path)


def test_verify_names_what_is_missing_corrupt_or_unacknowledged(tmp_path):
    store = CaptureStore(tmp_path)
    bodies = {rid: a_body(i) for i, rid in enumerate(("a", "b", "c"))}
    for rid, body in bodies.items():
        store.record(body, rid)
    store.close()
    sha = {rid: hashlib.sha256(body).hexdigest() for rid, body in bodies.items()}
    clean = verify(tmp_path, {"a": sha["a"], "b": sha["b"]})
    assert clean["one_to_one"] and clean["acknowledged_missing"] == 0
    assert clean["captured_not_acknowledged"] == 1 and clean["files_not_matching_index"] == 0
    (tmp_path / REQUESTS / "b.safetensors").write_bytes(bodies["b"][:-1] + b"\0")
    (tmp_path / REQUESTS / "c.safetensors").unlink()
    report = verify(tmp_path, {"a": sha["a"], "b": sha["b"], "z": "0" * 64})
    assert report["acknowledged_missing"] == 1  # "z" was answered but never captured
    assert report["files_not_matching_index"] == 1 and not report["one_to_one"]
    assert verify(tmp_path, {"a": "f" * 64})["acknowledged_bytes_differ"] == 1
