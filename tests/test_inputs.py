import subprocess
import sys

import orjson
import pytest

from batchery.errors import InputError
from batchery.inputs import iter_objects, read_requests
from batchery.requests import parse_request


def test_jsonl_yields_file_and_line_and_skips_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n\n  \t\r\n{"prompt": "b"}\n\x0c')  # blank: empty or only whitespace
    assert [(w.rsplit(":", 1)[1], o["prompt"]) for w, o in read_requests(path)] == [("1", "a"), ("4", "b")]


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


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv"])
def test_a_folder_given_as_the_request_file_is_an_input_error(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(InputError, match=f"{name}: is a folder, not a file"):
        list(read_requests(tmp_path / name))


def test_csv_quote_never_closed_names_the_line_it_opened_on_instead_of_merging_rows(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('id,prompt\na,"fine, quoted"\nb,"never closed\nc,third\nd,fourth\n')
    with pytest.raises(InputError, match=r"r\.csv:3: malformed CSV .*never closed"):
        list(read_requests(path))


def test_csv_row_with_more_fields_than_the_header_is_refused_not_cut(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("id,prompt\na,hello\nb,hello, world\n")
    with pytest.raises(InputError, match=r"r\.csv:3: 3 fields but the header has 2 columns"):
        list(read_requests(path))


def test_csv_lines_are_named_where_their_record_starts(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('prompt,temperature\nfine,0.5\n\n"two\nlines",warm\n')
    with pytest.raises(InputError, match=r"r\.csv:4: column 'temperature'"):
        list(read_requests(path))


def test_csv_integer_past_64_bits_is_an_input_error_naming_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(f"prompt,max_tokens\nhello,{2**70}\n")
    with pytest.raises(InputError, match=r"r\.csv:2: field 'max_tokens' must be a positive integer"):
        for where, obj in read_requests(path):
            parse_request(obj, "m", where)


@pytest.mark.parametrize("name, content, message", [
    ("r.csv", "id,prompt\na,x\nb,y\n\nc,z\nb,w\na,v\n", r"r\.csv:6: id already given on .*r\.csv:3"),
    ("r.jsonl", '{"id": 7, "prompt": "x"}\n{"prompt": "y"}\n{"id": "7", "prompt": "z"}\n',
     r"r\.jsonl:3: id already given on .*r\.jsonl:1"),  # 7 and "7" are one id in the results
])
def test_repeated_ids_are_an_error_naming_both_lines(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message + "; ids must be unique within a job"):
        list(read_requests(path))


def test_repeated_ids_from_python_are_an_error_naming_both_requests():
    with pytest.raises(InputError, match=r"request\[2\]: id already given on request\[0\]"):
        list(iter_objects([{"id": "a", "prompt": "x"}, {"prompt": "y"}, {"id": "a", "prompt": "z"}]))
    assert len(list(iter_objects([{"prompt": "same"}, {"prompt": "same"}]))) == 2  # no ids, no check


def test_unique_ids_are_checked_without_loading_numpy_and_a_repeat_among_thousands_is_found(tmp_path):
    """numpy costs 0.2 s to load, ten times what checking 100,000 ids costs without it."""
    unique, repeated = tmp_path / "unique.jsonl", tmp_path / "repeated.jsonl"
    lines = [orjson.dumps({"id": f"r{i}", "prompt": "x"}) for i in range(5000)]
    unique.write_bytes(b"\n".join(lines) + b"\n")
    repeated.write_bytes(b"\n".join([*lines[:4000], lines[17], *lines[4000:]]) + b"\n")
    probe = ("import sys; from pathlib import Path; from batchery.inputs import read_requests\n"
             f"assert len(list(read_requests(Path({str(unique)!r})))) == 5000\n"
             "print('numpy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    with pytest.raises(InputError, match=r"repeated\.jsonl:4001: id already given on .*repeated\.jsonl:18;"):
        list(read_requests(repeated))
