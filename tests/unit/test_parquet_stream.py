"""Issue 13, item 3: `capture -o FILE.parquet` writes row groups as it captures; counters land in the footer."""

import pyarrow.parquet as pq

from dnscorrelate import events
from tests.fixtures import load_fixture


def test_each_write_is_a_row_group_on_disk_before_the_file_is_closed(tmp_path):
    frame, stats, _, _ = load_fixture("healthy")
    parts = [frame.iloc[k:k + 7] for k in range(0, 21, 7)]
    path = tmp_path / "events.parquet"
    stream = events.ParquetStream(path)
    sizes = []
    for part in parts:
        stream.write(part)
        sizes.append(path.stat().st_size)
    assert sizes[0] > 4 and sizes[0] < sizes[1] < sizes[2]  # each part's pages are on disk as it is written
    stream.write(frame.iloc[0:0])  # nothing: no empty row group
    stream.close({**stats, "lost_samples": 3})
    assert pq.ParquetFile(path).metadata.num_row_groups == 3 and stream.rows == 21 and stream.row_groups == 3
    loaded, loaded_stats = events.load(path)
    assert loaded.equals(events.conform(frame.iloc[:21]))
    assert loaded_stats == {**stats, "lost_samples": 3}


def test_categories_differing_per_row_group_read_back_as_one_table(tmp_path):
    frame, _, _, _ = load_fixture("healthy")
    many = events.concat([frame] * 3).iloc[:300].assign(qname=[f"n{i}.example.com." for i in range(300)])  # 300 categories: int16 codes
    path = tmp_path / "events.parquet"
    stream = events.ParquetStream(path)
    stream.write(frame.iloc[:10])
    stream.write(many)
    stream.close()
    loaded, stats = events.load(path)
    assert stats == {} and list(loaded["qname"].astype(str)) == list(frame["qname"].iloc[:10].astype(str)) + list(many["qname"])


def test_a_stream_never_closed_is_no_parquet_file(tmp_path):
    frame, _, _, _ = load_fixture("healthy")
    path = tmp_path / "events.parquet"
    stream = events.ParquetStream(path)
    stream.write(frame)
    try:
        events.load(path)
    except events.EventsError as err:
        assert "cannot read events" in str(err)
    else:
        raise AssertionError("a file without its footer read as events")
    stream.close()
