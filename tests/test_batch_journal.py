"""The batch output file: whole lines, appended or truncated, and repaired for --resume."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from anyfast_cli.batch import journal
from anyfast_cli.batch.journal import ResultSink, keep_answered
from anyfast_cli.errors import UsageError


def wanted(*ids: str) -> dict:
    """Input ids with the fingerprints of their requests (here simply fp-ID)."""
    return {i: f"fp-{i}" for i in ids}


def ok_line(record_id: str, text: str = "fine") -> bytes:
    line = {
        "id": f"batch_req_fp-{record_id}",
        "custom_id": record_id,
        "response": {
            "status_code": 200,
            "request_id": f"req-{record_id}",
            "body": {"choices": [{"message": {"content": text}}]},
        },
        "error": None,
    }
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def failed_line(record_id: str) -> bytes:
    line = {
        "id": f"batch_req_fp-{record_id}",
        "custom_id": record_id,
        "response": {"status_code": 500, "request_id": "r", "body": None},
        "error": {"code": "http_500", "message": "HTTP 500"},
    }
    return json.dumps(line).encode() + b"\n"


def read_ids(path) -> list[str]:
    with open(path, "rb") as handle:
        return [json.loads(line)["custom_id"] for line in handle]


# --- keep_answered ---------------------------------------------------------------------------


def test_missing_file_means_nothing_answered(tmp_path):
    path = tmp_path / "out.jsonl"
    assert keep_answered(str(path), wanted("a")) == set()
    assert not path.exists()


def test_keeps_answered_drops_failed_foreign_duplicate_and_torn(tmp_path):
    path = tmp_path / "out.jsonl"
    a, c = ok_line("a", "first"), ok_line("c")
    path.write_bytes(
        a
        + failed_line("b")
        + ok_line("gone")  # an id no longer in the input
        + ok_line("a", "second copy")  # a duplicate: the first one stays
        + b"\n"  # a blank line is no harm
        + c
        + ok_line("d")[:40]  # torn by kill -9: no newline, not JSON
    )
    kept = keep_answered(str(path), wanted("a", "b", "c", "d"))
    assert kept == {"a", "c"}
    assert path.read_bytes() == a + c


def test_a_whole_last_line_without_newline_is_kept_and_terminated(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("a") + ok_line("b").rstrip(b"\n"))
    assert keep_answered(str(path), wanted("a", "b")) == {"a", "b"}
    assert path.read_bytes() == ok_line("a") + ok_line("b")
    # what the run then appends starts on a line of its own
    sink = ResultSink(str(path), io.StringIO(), append=True)
    sink.write({"custom_id": "c", "error": None})
    sink.close()
    assert read_ids(path) == ["a", "b", "c"]


def test_a_line_torn_inside_a_multibyte_character_is_dropped(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = json.dumps({"custom_id": "z", "error": None, "response": {"body": "日本語"}}, ensure_ascii=False).encode()
    path.write_bytes(ok_line("a") + whole[: whole.index("本".encode()) + 1])
    assert keep_answered(str(path), wanted("a", "z")) == {"a"}
    assert path.read_bytes() == ok_line("a")


@pytest.mark.parametrize(
    "garbage", [b"[1,2]\n", b'"a string"\n', b'{"no_custom_id": 1}\n', b"\x00\x01\n", b"my notes\n"]
)
def test_a_file_that_is_not_batch_output_is_refused_and_left_alone(tmp_path, garbage):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("a") + garbage)
    with pytest.raises(UsageError) as raised:
        keep_answered(str(path), wanted("a"))
    assert "does not look like anyfast batch output (line 2)" in raised.value.message
    assert path.read_bytes() == ok_line("a") + garbage


def test_an_answer_to_a_request_that_has_changed_is_dropped(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("a") + ok_line("b"))
    assert keep_answered(str(path), {"a": "fp-a", "b": "fp-of-an-edited-prompt"}) == {"a"}
    assert read_ids(path) == ["a"]


def test_only_wanted_ids_count(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("1") + ok_line("2") + ok_line("3"))
    assert keep_answered(str(path), wanted("2")) == {"2"}
    assert read_ids(path) == ["2"]


def test_rewrite_keeps_the_file_mode(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("a"))
    os.chmod(path, 0o600)
    keep_answered(str(path), wanted("a"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p != "out.jsonl"]  # no temporary left behind


# --- ResultSink ------------------------------------------------------------------------------


def test_sink_truncates_without_resume(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("old"))
    sink = ResultSink(str(path), io.StringIO(), append=False)
    sink.write({"custom_id": "new"})
    sink.close()
    assert read_ids(path) == ["new"]


def test_sink_appends_with_resume(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(ok_line("old"))
    sink = ResultSink(str(path), io.StringIO(), append=True)
    sink.write({"custom_id": "new"})
    sink.close()
    assert read_ids(path) == ["old", "new"]


def test_sink_writes_each_line_whole_with_one_write(tmp_path, monkeypatch):
    """kill -9 can only ever tear the last line: every result is a single write() of a whole line."""
    writes = []
    real_write = os.write

    def spy(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    path = tmp_path / "out.jsonl"
    sink = ResultSink(str(path), io.StringIO(), append=False)
    monkeypatch.setattr(journal.os, "write", spy)
    big = {"custom_id": "big", "response": {"body": "x" * 200_000}, "error": None}
    sink.write({"custom_id": "a", "text": "héllo 日本"})
    sink.write(big)
    monkeypatch.undo()
    sink.close()
    assert len(writes) == 2
    assert all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert json.loads(writes[0]) == {"custom_id": "a", "text": "héllo 日本"}
    assert json.loads(writes[1]) == big
    assert path.read_bytes() == b"".join(writes)


def test_sink_is_visible_on_disk_before_close(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = ResultSink(str(path), io.StringIO(), append=False)
    sink.write({"custom_id": "a"})
    assert read_ids(path) == ["a"]  # no user-space buffer: a crash now loses nothing
    sink.close()


def test_sink_finishes_a_short_write(tmp_path, monkeypatch):
    real_write = os.write

    def short(fd, data):
        return real_write(fd, bytes(data)[:7])

    path = tmp_path / "out.jsonl"
    sink = ResultSink(str(path), io.StringIO(), append=False)
    monkeypatch.setattr(journal.os, "write", short)
    sink.write({"custom_id": "a", "pad": "y" * 50})
    monkeypatch.undo()
    sink.close()
    assert json.loads(path.read_bytes()) == {"custom_id": "a", "pad": "y" * 50}


class FlushCounter(io.StringIO):
    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_sink_to_stdout_writes_compact_lines_and_flushes_each():
    out = FlushCounter()
    sink = ResultSink(None, out, append=False)
    sink.write({"custom_id": "a", "t": "ü"})
    assert out.flushes == 1
    sink.write({"custom_id": "b"})
    sink.close()
    assert out.getvalue() == '{"custom_id":"a","t":"ü"}\n{"custom_id":"b"}\n'
    assert out.flushes == 2
