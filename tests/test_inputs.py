import pytest

from batchery.errors import InputError
from batchery.inputs import read_requests


def test_jsonl_yields_file_and_line_and_skips_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert [(w.rsplit(":", 1)[1], o["prompt"]) for w, o in read_requests(path)] == [("1", "a"), ("3", "b")]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(InputError, match=r"r\.jsonl:2: not valid JSON"):
        list(read_requests(path))


def test_invalid_utf8_in_jsonl_is_an_input_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"r\.jsonl:1"):
        list(read_requests(path))


def test_csv_reads_prompt_and_converts_numbers(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("id,prompt,temperature,max_tokens\nq1,Hello,0.5,10\nq2,\"Hi, there\",,\n")
    rows = [o for _, o in read_requests(path)]
    assert rows == [{"id": "q1", "prompt": "Hello", "temperature": 0.5, "max_tokens": 10},
                    {"id": "q2", "prompt": "Hi, there"}]


def test_csv_without_prompt_column_is_rejected(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("question\nHello\n")
    with pytest.raises(InputError, match="needs a 'prompt' column"):
        list(read_requests(path))


def test_csv_with_bad_number_names_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("prompt,temperature\nHello,warm\n")
    with pytest.raises(InputError, match=r"r\.csv:2: column 'temperature'"):
        list(read_requests(path))


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "r.txt").write_text("hello\n")
    with pytest.raises(InputError, match="unknown input format"):
        list(read_requests(tmp_path / "r.txt"))
    with pytest.raises(InputError, match="no such file"):
        list(read_requests(tmp_path / "nope.jsonl"))
