import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from servelab.records import RecordWriter, RequestRecord, read_records


def test_records_round_trip_through_parquet_parts(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "r", flush_rows=3) as w:
        for i in range(7):
            w.append(RequestRecord(run_id="r1", request_id=str(i), latency_ms=float(i), cold=i == 0))
    t = read_records(tmp_path / "r")
    assert t.num_rows == 7
    assert t.column("latency_ms").to_pylist() == [float(i) for i in range(7)]
    assert t.column("cold").to_pylist()[0] is True
    assert len(list((tmp_path / "r").glob("part-*.parquet"))) == 3


def test_killed_writer_keeps_every_flushed_record(tmp_path: Path) -> None:
    out = tmp_path / "r"
    code = (
        "import time,sys\n"
        "from servelab.records import RecordWriter, RequestRecord\n"
        f"w = RecordWriter({str(out)!r}, flush_interval_s=0.05)\n"
        "i = 0\n"
        "while True:\n"
        "    w.append(RequestRecord(run_id='k', request_id=str(i))); i += 1\n"
        "    time.sleep(0.001)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t = read_records(out)  # no half-written part is ever visible
    assert t.num_rows > 0
    ids = [int(x) for x in t.column("request_id").to_pylist()]
    assert ids == list(range(len(ids)))


def test_a_new_writer_appends_after_existing_parts(tmp_path: Path) -> None:
    with RecordWriter(tmp_path) as w:
        w.append(RequestRecord(run_id="a", request_id="1"))
    with RecordWriter(tmp_path) as w:
        w.append(RequestRecord(run_id="a", request_id="2"))
    assert read_records(tmp_path).column("request_id").to_pylist() == ["1", "2"]


def test_writers_with_prefixes_share_a_directory(tmp_path: Path) -> None:
    with RecordWriter(tmp_path, prefix="p0-") as a, RecordWriter(tmp_path, prefix="p1-") as b:
        a.append(RequestRecord(run_id="a", request_id="a1"))
        b.append(RequestRecord(run_id="a", request_id="b1"))
    assert sorted(read_records(tmp_path).column("request_id").to_pylist()) == ["a1", "b1"]


def test_records_reach_disk_on_a_timer_without_another_append(tmp_path: Path) -> None:
    w = RecordWriter(tmp_path, flush_interval_s=0.2)
    try:
        for i in range(3):
            w.append(RequestRecord(run_id="t", request_id=str(i)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and read_records(tmp_path).num_rows < 3:
            time.sleep(0.05)
        assert read_records(tmp_path).column("request_id").to_pylist() == ["0", "1", "2"]
    finally:
        w.close()
    assert read_records(tmp_path).num_rows == 3  # close writes nothing twice
