"""Price catalog and cost models: hand-computed bills, re-rounding, granularity, overrides."""

from __future__ import annotations

import importlib.resources
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from servelab.billing.catalog import ServerlessEntry, load_catalog, parse_entry, shipped_catalogs
from servelab.billing.pricing import billed_ms, estimate, price_run
from servelab.errors import ConfigError
from servelab.records import SCHEMA, RecordWriter, RequestRecord, read_records

LAMBDA = "aws-lambda-x86-us-east-1"
GCF1 = "gcp-cloudfunctions-gen1-us-central1"
LAMBDA_GB_S = 0.0000166667
LAMBDA_PC_GB_S = 0.0000041667
LAMBDA_PC_BUSY_GB_S = 0.0000097222


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _write(tmp_path: Path, records: list[RequestRecord]) -> Path:
    out = tmp_path / "records"
    with RecordWriter(out) as w:
        w.extend(records)
    return out


def _rec(i: int, duration_ms: float | None, *, memory_mb: int | None = 256, status: str = "ok",
         start_s: float | None = None) -> RequestRecord:
    start = float(i) if start_s is None else start_s
    done = None if duration_ms is None or status == "throttled" else start + duration_ms / 1000
    return RequestRecord(run_id="r", request_id=f"q{i}", scheduled_s=start, sent_s=start,
                         completed_s=done, status=status, duration_ms=duration_ms, memory_mb=memory_mb)


def _big_table(n: int, duration_ms: float, memory_mb: int) -> pa.Table:
    """n ok records, built column-wise (RequestRecord objects are too slow for a million)."""
    cols = {f.name: pa.nulls(n, f.type) for f in SCHEMA}
    start = np.arange(n, dtype=np.float64) / 1000.0
    cols.update(
        run_id=pa.array(np.full(n, "r")), request_id=pa.array(np.arange(n).astype(str)),
        status=pa.array(np.full(n, "ok")), scheduled_s=pa.array(start), sent_s=pa.array(start),
        completed_s=pa.array(start + duration_ms / 1000), duration_ms=pa.array(np.full(n, duration_ms)),
        memory_mb=pa.array(np.full(n, memory_mb, dtype=np.int64)),
    )
    return pa.table(cols, schema=SCHEMA)


# ------------------------------------------------------------------------------------ catalog


def test_shipped_catalog_is_package_data_and_every_entry_names_its_source(catalog):
    files = [p.name for p in importlib.resources.files("servelab.billing").joinpath("prices").iterdir()]
    assert "2026-11.yaml" in files and shipped_catalogs()[-1] == "2026-11"
    assert catalog.files[0].date == "2026-11-23" and catalog.files[0].catalog_version == 1
    assert len(catalog) >= 25
    assert all(len(e.source) > 40 for e in catalog)
    assert any(not e.confirmed for e in catalog), "unconfirmed figures must be marked, not hidden"


def test_catalog_covers_every_platform_the_study_compared(catalog):
    for entry_id in (LAMBDA, "aws-lambda-arm-us-east-1", GCF1, "gcp-cloudfunctions-gen2-us-central1",
                     "aws-sagemaker-serverless-us-east-1", "aws-sagemaker-ml.m5.xlarge-us-east-1",
                     "aws-sagemaker-ml.c5.xlarge-us-east-1", "aws-sagemaker-ml.g4dn.xlarge-us-east-1",
                     "gcp-vertex-prediction-n1-standard-4-us-central1",
                     "gcp-vertex-prediction-n1-standard-4-t4-us-central1", "aws-ec2-c5.xlarge-us-east-1",
                     "aws-ec2-m5.xlarge-us-east-1", "aws-ec2-g4dn.xlarge-us-east-1",
                     "aws-ec2-p2.xlarge-us-east-1", "aws-ec2-p3.2xlarge-us-east-1",
                     "gcp-gce-n1-standard-4-t4-us-central1", "gcp-gce-n1-standard-4-k80-us-central1"):
        assert entry_id in catalog
    assert catalog.get(LAMBDA).provisioned is not None


def test_gcf_gen1_tiers_reproduce_the_published_price_per_100ms(catalog):
    published = {128: 0.000000231, 256: 0.000000463, 512: 0.000000925, 1024: 0.000001650,
                 2048: 0.000002900, 4096: 0.000005800, 8192: 0.000006800}
    e = catalog.get(GCF1)
    for t in e.tiers:
        per_100ms = 0.1 * (t.memory_mb / 1024 * e.per_gb_second_usd + t.ghz * e.per_ghz_second_usd)
        assert per_100ms == pytest.approx(published[t.memory_mb], abs=6e-10)


def test_user_file_replaces_a_shipped_entry_by_id_and_adds_new_ones(tmp_path, catalog):
    override = tmp_path / "my-prices.yaml"
    override.write_text(f"""
catalog_version: 3
date: 2027-01-15
currency: USD
entries:
  - id: {LAMBDA}
    provider: aws
    service: lambda
    region: us-east-1
    model: serverless
    per_million_requests_usd: 0.25
    per_gb_second_usd: 0.00002
    rounding_ms: 1
    source: negotiated price sheet
    confirmed: true
  - id: onprem-gpu-box
    provider: onprem
    service: rack
    region: lab
    model: instance_hour
    instance_type: 2x T4 box
    hourly_usd: 0.40
    source: amortised purchase price
    confirmed: true
""")
    cat = load_catalog(override)
    assert cat.get(LAMBDA).per_million_requests_usd == 0.25
    assert cat.get(LAMBDA).provisioned is None  # replaced whole, not merged field by field
    assert cat.origin(LAMBDA).date == "2027-01-15" and cat.origin(GCF1).date == "2026-11-23"
    assert cat.get("onprem-gpu-box").hourly_usd == 0.40
    assert len(cat) == len(catalog) + 1

    b = estimate(LAMBDA, requests=1000, duration_ms=1000, memory_mb=1024, catalog=cat)
    assert b.catalog_date == "2027-01-15"
    assert b.total_usd == pytest.approx(1000 * 0.25e-6 + 1000 * 0.00002)
    assert any("my-prices.yaml" in n for n in b.notes)


@pytest.mark.parametrize(("entry_yaml", "field"), [
    ("per_million_requests_usd: -0.2\n    per_gb_second_usd: 0.00001\n    rounding_ms: 1",
     "per_million_requests_usd"),
    ("per_million_requests_usd: 0.2\n    per_gb_second_usd: 0.00001\n    rounding_ms: 0", "rounding_ms"),
    ("per_million_requests_usd: 0.2\n    per_gb_second_usd: 0.00001\n    rounding_ms: 1\n    rounding: 1",
     "rounding"),
    ("per_million_requests_usd: 0.2\n    per_gb_second_usd: 0.00001", "rounding_ms"),
])
def test_invalid_entry_error_names_the_file_the_entry_and_the_field(tmp_path, entry_yaml, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""catalog_version: 1
date: 2027-01-01
currency: USD
entries:
  - id: broken-lambda
    provider: aws
    service: lambda
    region: us-east-1
    model: serverless
    source: test
    confirmed: false
    {entry_yaml}
""")
    with pytest.raises(ConfigError) as err:
        load_catalog(bad)
    msg = str(err.value)
    assert str(bad) in msg and "'broken-lambda'" in msg and f"'{field}'" in msg


@pytest.mark.parametrize(("text", "expected"), [
    ("catalog_version: 1\ndate: 2027-01-01\ncurrency: EUR\nentries: []\n", "currency"),
    ("catalog_version: 1\ncurrency: USD\nentries: []\n", "date"),
    ("[1, 2]\n", "a price file is a mapping"),
    ("entries: [\n", "not valid YAML"),
])
def test_malformed_price_files_are_config_errors(tmp_path, text, expected):
    p = tmp_path / "f.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_catalog(p)


def test_duplicate_ids_unknown_models_and_missing_files_are_rejected(tmp_path, catalog):
    entry = catalog.get("aws-ec2-c5.large-us-east-1").model_dump()
    dup = tmp_path / "dup.yaml"
    import yaml
    dup.write_text(yaml.safe_dump({"catalog_version": 1, "date": "2027-01-01", "currency": "USD",
                                   "entries": [entry, entry]}))
    with pytest.raises(ConfigError, match="appears twice"):
        load_catalog(dup)
    with pytest.raises(ConfigError, match=r"'model'.*not one of serverless, instance_hour"):
        parse_entry({**entry, "model": "per_token"}, where="x.yaml")
    with pytest.raises(ConfigError, match="gpu_type is required"):
        parse_entry({**entry, "gpu_count": 1}, where="x.yaml")
    with pytest.raises(ConfigError, match="cannot read price file"):
        load_catalog(tmp_path / "nope.yaml")


def test_entries_are_frozen_and_unknown_ids_suggest_close_ones(catalog):
    with pytest.raises(Exception, match="frozen"):
        catalog.get(LAMBDA).per_gb_second_usd = 0.0
    with pytest.raises(ConfigError, match="did you mean aws-lambda-x86-us-east-1"):
        catalog.get("aws-lambda-x86-us-east")


# ------------------------------------------------------------------------------- cost models


def test_a_million_lambda_requests_of_120ms_at_1769mb(catalog):
    table = _big_table(1_000_000, 120.0, 1769)
    t0 = time.perf_counter()
    b = price_run(table, LAMBDA, catalog=catalog)
    elapsed = time.perf_counter() - t0
    # 1769 MB = 1.7275390625 GB; x 0.120 s = 0.2073046875 GB-s per request; x 1e6 = 207,304.6875 GB-s
    assert b.billed_gb_s == pytest.approx(207_304.6875)
    assert b.requests == 1_000_000 and b.requests_usd == pytest.approx(0.20)
    assert b.compute_usd == pytest.approx(207_304.6875 * LAMBDA_GB_S)  # $3.4550850
    assert b.total_usd == pytest.approx(3.6550850, abs=1e-6)
    assert b.per_million_usd == pytest.approx(b.total_usd)
    assert b.entry_id == LAMBDA and b.catalog_date == "2026-11-23"
    assert elapsed < 5.0, f"pricing a million records took {elapsed:.2f} s"


def test_the_same_records_bill_differently_at_1ms_and_100ms_rounding(tmp_path, catalog):
    recs = [_rec(0, 120.4), _rec(1, 260.0), _rec(2, 30.0), _rec(3, None, status="throttled")]
    table = read_records(_write(tmp_path, recs))
    durations = np.array([120.4, 260.0, 30.0])
    np.testing.assert_array_equal(billed_ms(durations, catalog.get(LAMBDA)), [121, 260, 30])
    np.testing.assert_array_equal(billed_ms(durations, catalog.get(GCF1)), [200, 300, 100])

    aws = price_run(table, LAMBDA, catalog=catalog)
    gcf = price_run(table, GCF1, catalog=catalog)
    assert aws.requests == gcf.requests == 3  # the throttled one never ran: not billed
    assert any("1 throttled" in n for n in aws.notes)
    # Lambda: 0.411 s x 0.25 GB x $0.0000166667 + 3 x $0.0000002
    assert aws.compute_usd == pytest.approx(0.411 * 0.25 * LAMBDA_GB_S)
    assert aws.requests_usd == pytest.approx(3 * 0.2e-6)
    # GCF gen1, 256 MB tier = 400 MHz: 0.6 s x (0.25 GB x $0.0000025 + 0.4 GHz x $0.00001)
    assert gcf.compute_usd == pytest.approx(0.6 * (0.25 * 2.5e-6 + 0.4 * 1e-5))
    assert gcf.requests_usd == pytest.approx(3 * 0.4e-6)
    assert gcf.billed_gb_s == pytest.approx(0.6 * 0.25)


def test_a_batch_is_billed_as_one_rounded_execution_shared_by_its_requests(tmp_path, catalog):
    # four requests served together in one 130 ms batch, one served alone for 130 ms
    recs = [_rec(i, 130.0, start_s=0.0) for i in range(4)] + [_rec(4, 130.0, start_s=1.0)]
    for r in recs[:4]:
        r.batch_size = 4
    table = read_records(_write(tmp_path, recs))
    gcf = price_run(table, GCF1, catalog=catalog)
    # two executions of 200 ms (100 ms steps), not five
    assert gcf.billed_gb_s == pytest.approx(2 * 0.2 * 0.25)
    assert gcf.requests == 5 and any("batches" in n for n in gcf.notes)


def test_billed_ms_ignores_float_noise_and_applies_the_minimum(catalog):
    lam, gcf = catalog.get(LAMBDA), catalog.get(GCF1)
    assert billed_ms(np.array([0.12 * 1000]), lam)[0] == 120  # 120.00000000000001 is 120 ms
    assert billed_ms(np.array([100.0, 100.5, 0.0]), gcf).tolist() == [100, 200, 100]
    assert billed_ms(np.array([0.0, 0.2]), lam).tolist() == [1, 1]
    assert math.isnan(billed_ms(np.array([np.nan]), lam)[0])
    with pytest.raises(ConfigError, match="billed by instance_hour"):
        billed_ms(np.array([1.0]), catalog.get("aws-ec2-c5.large-us-east-1"))


def test_memory_between_tiers_bills_the_next_tier_up_and_limits_are_enforced(tmp_path, catalog):
    table = read_records(_write(tmp_path, [_rec(0, 100.0, memory_mb=300)]))
    b = price_run(table, GCF1, catalog=catalog)
    assert b.compute_usd == pytest.approx(0.1 * (0.5 * 2.5e-6 + 0.8 * 1e-5))  # 512 MB / 800 MHz tier
    assert any("next size up" in n for n in b.notes)
    with pytest.raises(ConfigError, match="above its largest size"):
        price_run(table, GCF1, catalog=catalog, memory_mb=16384)
    with pytest.raises(ConfigError, match="between 128 and 10240 MB"):
        price_run(table, LAMBDA, catalog=catalog, memory_mb=64)


def test_memory_comes_from_the_records_unless_overridden(tmp_path, catalog):
    table = read_records(_write(tmp_path, [_rec(0, 1000.0, memory_mb=None)]))
    with pytest.raises(ConfigError, match="pass memory_mb"):
        price_run(table, LAMBDA, catalog=catalog)
    b = price_run(table, LAMBDA, catalog=catalog, memory_mb=2048)
    assert b.compute_usd == pytest.approx(2 * LAMBDA_GB_S)
    assert any("set by the caller" in n for n in b.notes)


def test_missing_duration_falls_back_to_the_records_billed_ms(tmp_path, catalog):
    rec = _rec(0, None)
    rec.billed_ms = 300.0
    b = price_run(read_records(_write(tmp_path, [rec])), LAMBDA, catalog=catalog)
    assert b.compute_usd == pytest.approx(0.3 * 0.25 * LAMBDA_GB_S)
    assert any("no duration_ms" in n for n in b.notes)


@pytest.mark.parametrize(("entry_id", "window_s", "instances", "billed_s"), [
    ("aws-ec2-c5.large-us-east-1", 30.0, 1, 60),  # 60 s minimum
    ("aws-ec2-c5.large-us-east-1", 90.4, 2, 91),  # per-second steps, rounded up
    ("gcp-gce-n1-standard-4-t4-us-central1", 3600.0, 3, 3600),
    ("gcp-vertex-prediction-n1-standard-4-us-central1", 61.0, 1, 90),  # 30 s steps
])
def test_instance_hours_round_up_to_the_billing_granularity(catalog, entry_id, window_s, instances, billed_s):
    hourly = catalog.get(entry_id).hourly_usd
    b = estimate(entry_id, requests=1000, duration_ms=50, duration_s=window_s, instances=instances,
                 catalog=catalog)
    assert b.window_s == billed_s
    assert b.instance_usd == pytest.approx(instances * billed_s / 3600 * hourly)
    assert b.total_usd == b.instance_usd and b.compute_usd == b.requests_usd == 0
    assert b.per_million_usd == pytest.approx(b.total_usd / 1000 * 1e6)


def test_instance_window_defaults_to_the_run_span(tmp_path, catalog):
    # scheduled at 0 s .. 90 s, the last one completes at 90.4 s
    table = read_records(_write(tmp_path, [_rec(0, 100.0), _rec(1, 400.0, start_s=90.0)]))
    b = price_run(table, "aws-ec2-m5.large-us-east-1", catalog=catalog)
    assert b.window_s == 91
    assert b.instance_usd == pytest.approx(91 / 3600 * 0.096)
    assert any("first scheduled send to last completion" in n for n in b.notes)


def test_provisioned_concurrency_serves_the_first_come_and_bills_its_window(tmp_path, catalog):
    # four 1 s requests at 1024 MB starting at 0, 0.5, 0.6 and 3.0 s; one provisioned instance:
    # the first and the last find it free, the middle two spill over to on-demand.
    recs = [_rec(i, 1000.0, memory_mb=1024, start_s=s) for i, s in enumerate([0.0, 0.5, 0.6, 3.0])]
    table = read_records(_write(tmp_path, recs))
    b = price_run(table, LAMBDA, catalog=catalog, provisioned_instances=1, duration_s=301)
    assert b.window_s == 600  # enabled time rounds up to 5 minutes
    assert b.provisioned_usd == pytest.approx(1 * 1.0 * 600 * LAMBDA_PC_GB_S)
    assert b.compute_usd == pytest.approx(2 * LAMBDA_PC_BUSY_GB_S + 2 * LAMBDA_GB_S)
    assert b.requests_usd == pytest.approx(4 * 0.2e-6)
    assert any("2 of 4 requests ran on the 1 provisioned" in n for n in b.notes)
    more = price_run(table, LAMBDA, catalog=catalog, provisioned_instances=3, duration_s=301)
    assert more.compute_usd == pytest.approx(4 * LAMBDA_PC_BUSY_GB_S)


def test_provisioned_and_instances_only_where_they_apply(tmp_path, catalog):
    table = read_records(_write(tmp_path, [_rec(0, 100.0)]))
    with pytest.raises(ConfigError, match="no provisioned-concurrency prices"):
        price_run(table, GCF1, catalog=catalog, provisioned_instances=1)
    with pytest.raises(ConfigError, match="provisioned_instances applies to serverless"):
        price_run(table, "aws-ec2-c5.large-us-east-1", catalog=catalog, provisioned_instances=1)
    with pytest.raises(ConfigError, match="'instances' applies to instance_hour"):
        price_run(table, LAMBDA, catalog=catalog, instances=2)
    with pytest.raises(ConfigError, match="duration_s"):
        estimate("aws-ec2-c5.large-us-east-1", requests=10, duration_ms=5, catalog=catalog)
    with pytest.raises(ConfigError, match="pass memory_mb"):
        estimate(LAMBDA, requests=10, duration_ms=5, catalog=catalog)


def test_estimate_matches_pricing_the_equivalent_records(catalog):
    table = _big_table(1000, 87.3, 512)
    gen2, sm = "gcp-cloudfunctions-gen2-us-central1", "aws-sagemaker-serverless-us-east-1"
    for entry_id in (LAMBDA, GCF1, gen2, sm):
        memory = 1024 if entry_id.startswith("aws-sagemaker") else 512
        run = price_run(table, entry_id, catalog=catalog, memory_mb=memory)
        est = estimate(entry_id, requests=1000, duration_ms=87.3, memory_mb=memory, catalog=catalog)
        assert est.total_usd == pytest.approx(run.total_usd, rel=1e-9), entry_id


def test_estimate_with_provisioned_capacity_assumes_uniform_arrivals(catalog):
    # 1 M x 120 ms = 120,000 busy seconds; 2 provisioned instances over an hour cover 7,200 s = 6 %
    b = estimate(LAMBDA, requests=1_000_000, duration_ms=120, memory_mb=1024, duration_s=3600,
                 provisioned_instances=2, catalog=catalog)
    busy_gb_s = 120_000.0
    assert b.compute_usd == pytest.approx(busy_gb_s * (0.06 * LAMBDA_PC_BUSY_GB_S + 0.94 * LAMBDA_GB_S))
    assert b.provisioned_usd == pytest.approx(2 * 3600 * LAMBDA_PC_GB_S)


def test_an_empty_run_costs_nothing_per_request_and_serialises(catalog):
    b = price_run(SCHEMA.empty_table(), LAMBDA, catalog=catalog, memory_mb=128)
    assert b.requests == 0 and b.total_usd == 0 and math.isnan(b.per_million_usd)
    assert b.to_dict()["per_million_usd"] is None


def test_unconfirmed_entries_say_so_in_every_breakdown(catalog):
    entry = catalog.get("aws-sagemaker-serverless-us-east-1")
    assert isinstance(entry, ServerlessEntry) and not entry.confirmed
    b = estimate(entry.id, requests=10, duration_ms=100, memory_mb=2048, catalog=catalog)
    assert any("UNCONFIRMED" in n for n in b.notes)
    assert b.compute_usd == pytest.approx(10 * 0.1 * 2 * 0.00002)


def test_records_missing_columns_are_a_config_error(catalog):
    with pytest.raises(ConfigError, match="lack column"):
        price_run(pa.table({"status": ["ok"]}), LAMBDA, catalog=catalog)
