"""Data files go in as their owners write them: JSON arrays (LLaMA-Factory's and Axolotl's alpaca files), JSON
Lines, CSV, Parquet, Arrow, plain text, compressed; errors name the file and the row (for a JSON array its index
and line); Hub ids say when the Hub is off; a LLaMA-Factory data folder is not taken for an HF dataset folder."""

import gzip
import json

import pandas as pd
import pyarrow as pa
import pytest

from trainforge.data.readers import read_rows
from trainforge.errors import DataError

ROWS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(4)]


def _array_text(rows) -> str:
    return json.dumps(rows, indent=2)  # what LLaMA-Factory ships: an indented JSON array


def _rows_of(path, **kw):
    return [row for _, row in read_rows(path, **kw)]


@pytest.mark.parametrize("compression", ["", ".gz", ".zst"])
@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet", "arrow"])
def test_every_reader_and_compression_gives_the_same_rows(tmp_path, kind, compression):
    plain = tmp_path / f"d.{kind}"
    frame = pd.DataFrame(ROWS)
    if kind == "json":
        plain.write_text(_array_text(ROWS))
    elif kind == "jsonl":
        plain.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == "csv":
        frame.to_csv(plain, index=False)
    elif kind == "parquet":
        frame.to_parquet(plain)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.OSFile(str(plain), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    path = plain
    if compression:
        path = tmp_path / f"d.{kind}{compression}"
        with pa.output_stream(str(path), compression="gzip" if compression == ".gz" else "zstd") as out:
            out.write(plain.read_bytes())
    assert _rows_of(path) == ROWS


def test_an_arrow_stream_and_a_json_object_holding_the_rows(tmp_path):
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert _rows_of(tmp_path / "s.arrow") == ROWS
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": ROWS}))
    assert _rows_of(tmp_path / "wrapped.json") == ROWS
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in ROWS))  # JSON Lines named .json
    assert _rows_of(tmp_path / "lines.json") == ROWS


def test_a_json_array_error_names_the_index_and_the_line(tmp_path):
    text = _array_text(ROWS[:2]) + "\n"
    broken = text.replace('"output": "a1"', '"output": a1')  # the second object (index 1) is broken
    (tmp_path / "bad.json").write_text(broken)
    line = broken.splitlines().index("  {", 2) + 1  # where the second object starts
    with pytest.raises(DataError, match=rf"bad.json, row 2 \(array index 1, line {line}\): not valid JSON"):
        read_rows(tmp_path / "bad.json")
    (tmp_path / "scalars.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"row 1 \(array index 0, line 1\): expected a JSON object, got int"):
        read_rows(tmp_path / "scalars.json")


def test_a_row_error_from_a_json_array_names_its_line(tmp_path):
    from trainforge.data.formats import normalize_rows

    rows = [*ROWS[:2], {"instruction": "q", "output": 5}]
    (tmp_path / "d.json").write_text(_array_text(rows))
    with pytest.raises(DataError, match=r"d.json, row 3 \(array index 2, line 12\): field `output` must be a string"):
        normalize_rows(read_rows(tmp_path / "d.json"), "alpaca", str(tmp_path / "d.json"))


def test_text_files_by_line_or_by_paragraph(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\n\nsecond doc, line one\nline two\n\n\nthird\n")
    assert _rows_of(path) == [
        {"text": "first doc"},
        {"text": "second doc, line one"},
        {"text": "line two"},
        {"text": "third"},
    ]
    numbered = read_rows(path, text_unit="paragraph")
    assert [n for n, _ in numbered] == [1, 3, 7]  # the line each document starts on
    assert [r["text"] for _, r in numbered] == ["first doc", "second doc, line one\nline two", "third"]
    gz = tmp_path / "corpus.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert _rows_of(gz) == _rows_of(path)


def test_a_corrupt_compressed_file_is_a_data_error(tmp_path):
    (tmp_path / "d.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"d.jsonl.gz could not be decompressed as gzip"):
        read_rows(tmp_path / "d.jsonl.gz")


def test_hub_ids_say_the_hub_is_off_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hf:tatsu-lab/alpaca@train: the Hugging Face Hub is off here .*save_to_disk"):
        read_rows("hf:tatsu-lab/alpaca@train")
    with pytest.raises(DataError, match=r"expected `hf:owner/name\[:config\]\[@split\]`"):
        read_rows("hf:")


def test_hub_ids_parse_config_and_split():
    from trainforge.data.readers import parse_hub_id

    assert parse_hub_id("hf:owner/name") == ("owner/name", None, "train")
    assert parse_hub_id("hf:owner/name:en@validation") == ("owner/name", "en", "validation")


def test_a_llamafactory_data_folder_is_not_an_hf_dataset_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(
        json.dumps(
            {
                "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
                "glaive_toolcall_en_demo": {"file_name": "glaive.json", "formatting": "sharegpt"},
            }
        )
    )
    with pytest.raises(DataError, match=r"LLaMA-Factory data folder.*dataset_info.json#alpaca_en_demo"):
        read_rows(folder)
    from datasets import Dataset

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))  # writes dataset_info.json and state.json
    assert _rows_of(tmp_path / "hf") == ROWS
