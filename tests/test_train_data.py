"""Data loaders from local files (made here), the synthetic tasks, sharding and resumable order."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from servelab.errors import ConfigError
from servelab.train.data import load_arrays, make_data, write_cifar10_bin
from servelab.train.job import parse_job

NET = {"layers": [{"name": "data", "type": "input", "shape": [2]}]}


def _job(data: dict, **kw) -> object:
    return parse_job({"neuralnet": NET, "data": data, **kw})


def test_cifar10_binary_records_are_read_as_images_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(10) % 10
    write_cifar10_bin(tmp_path / "data_batch_1.bin", imgs[:6], labels[:6])
    write_cifar10_bin(tmp_path / "data_batch_2.bin", imgs[6:8], labels[6:8])
    write_cifar10_bin(tmp_path / "test_batch.bin", imgs[8:], labels[8:])
    job = _job({"type": "cifar10", "path": str(tmp_path)}, batch_size=8)
    train = load_arrays(job.data, "train")
    assert train["data"].shape == (8, 3, 32, 32) and np.array_equal(train["data"], imgs[:8])
    assert np.array_equal(train["label"], labels[:8])
    test = next(make_data(job, "test"))
    assert torch.allclose(test["data"], torch.from_numpy(imgs[8:]).float() / 255)
    assert test["label"].dtype == torch.int64 and test["label"].tolist() == [8, 9]


def test_cifar10_normalises_with_mean_and_std(tmp_path: Path) -> None:
    imgs = np.full((2, 3, 32, 32), 255, dtype=np.uint8)
    write_cifar10_bin(tmp_path / "data_batch_1.bin", imgs, np.array([1, 2]))
    job = _job({"type": "cifar10", "path": str(tmp_path), "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]},
               batch_size=2)
    x = next(make_data(job, "train"))["data"]
    assert torch.allclose(x[:, 0], torch.full((2, 32, 32), 2.0))
    assert torch.allclose(x[:, 2], torch.full((2, 32, 32), 0.5))


def test_a_truncated_cifar_file_is_refused_with_the_record_size(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 3000)
    job = _job({"type": "cifar10", "path": str(tmp_path)})
    with pytest.raises(ConfigError, match="3073"):
        load_arrays(job.data, "train")


def test_missing_cifar_directory_says_where_to_get_it(tmp_path: Path) -> None:
    job = _job({"type": "cifar10", "path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="cifar-10-binary"):
        load_arrays(job.data, "train")


def test_npz_and_npy_sources(tmp_path: Path) -> None:
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10, dtype=np.int32) % 3
    np.savez(tmp_path / "train.npz", x=x, y=y)
    job = _job({"type": "numpy", "train": str(tmp_path / "train.npz"), "keys": {"data": "x", "label": "y"},
                "test_fraction": 0.2})
    train, test = load_arrays(job.data, "train"), load_arrays(job.data, "test")
    assert train["data"].dtype == np.float32 and train["label"].dtype == np.int64
    assert len(train["data"]) == 8 and len(test["data"]) == 2
    assert sorted(train["data"][:, 0].tolist() + test["data"][:, 0].tolist()) == x[:, 0].tolist()  # a partition
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    job = _job({"type": "numpy", "train": {"data": str(tmp_path / "x.npy"), "label": str(tmp_path / "y.npy")}})
    assert np.array_equal(load_arrays(job.data, "train")["label"], y)
    with pytest.raises(ConfigError, match="no test split"):
        load_arrays(job.data, "test")


def test_csv_with_string_labels_maps_them_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a,b,species\n1,2,setosa\n3,4,virginica\n5,6,setosa\n")
    (tmp_path / "test.csv").write_text("a,b,species\n7,8,virginica\n")
    job = _job({"type": "csv", "train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"),
                "label_column": "species"})
    train = load_arrays(job.data, "train")
    assert train["data"].tolist() == [[1, 2], [3, 4], [5, 6]] and train["label"].tolist() == [0, 1, 0]
    assert load_arrays(job.data, "test")["label"].tolist() == [1]


def test_csv_names_a_bad_label_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    job = _job({"type": "csv", "train": str(tmp_path / "t.csv"), "label_column": "class"})
    with pytest.raises(ConfigError, match="no column 'class'"):
        load_arrays(job.data, "train")


def test_image_folder_reads_one_class_per_sub_folder(tmp_path: Path) -> None:
    from PIL import Image

    for label, (cls, colour) in enumerate([("cat", (255, 0, 0)), ("dog", (0, 0, 255))]):
        (tmp_path / cls).mkdir()
        for i in range(2 + label):
            Image.new("RGB", (12, 10), colour).save(tmp_path / cls / f"{i}.png")
    job = _job({"type": "image_folder", "train": str(tmp_path), "size": [8, 8]}, batch_size=5)
    arrays = load_arrays(job.data, "train")
    assert arrays["data"].shape == (5, 3, 8, 8) and arrays["label"].tolist() == [0, 0, 1, 1, 1]
    x = next(make_data(job, "train"))
    red = x["data"][x["label"] == 0]
    assert torch.allclose(red[:, 0], torch.ones_like(red[:, 0])) and torch.all(red[:, 2] == 0)


def test_synthetic_sequence_labels_echo_the_input_after_the_delay() -> None:
    job = _job({"type": "synthetic_sequence", "length": 10, "delay": 3, "num_train": 5})
    a = load_arrays(job.data, "train")
    assert (a["label"][:, :3] == -100).all()
    assert np.array_equal(a["label"][:, 3:], a["data"][:, :7])


def test_synthetic_data_is_seeded() -> None:
    one = load_arrays(_job({"type": "synthetic", "seed": 1}).data, "train")
    two = load_arrays(_job({"type": "synthetic", "seed": 1, "num_test": 7}).data, "train")  # other cache key
    three = load_arrays(_job({"type": "synthetic", "seed": 2}).data, "train")
    assert np.array_equal(one["data"], two["data"]) and not np.array_equal(one["data"], three["data"])


def test_shards_partition_each_epoch_and_batches_are_per_shard() -> None:
    job = _job({"type": "synthetic", "num_train": 64}, batch_size=8)
    seen = []
    for shard in range(2):
        batches = list(islice(make_data(job, "train", shard, 2), 4))  # one epoch of this shard
        assert all(b["data"].shape == (8, 8) for b in batches)  # batch_size per shard, dim 8
        seen.append(torch.cat([b["data"] for b in batches]))
    allx = torch.from_numpy(load_arrays(job.data, "train")["data"])
    rows = {tuple(r.tolist()) for r in torch.cat(seen)}
    assert len(rows) == 64 and rows == {tuple(r.tolist()) for r in allx}


def test_start_batch_resumes_the_same_sequence_across_epochs() -> None:
    job = _job({"type": "synthetic", "num_train": 40}, batch_size=8, seed=3)
    full = list(islice(make_data(job, "train"), 12))  # 5 batches per epoch: crosses two epoch boundaries
    resumed = list(islice(make_data(job, "train", start_batch=7), 5))
    for a, b in zip(full[7:], resumed, strict=True):
        assert torch.equal(a["data"], b["data"])
    assert not torch.equal(full[0]["data"], full[5]["data"])  # reshuffled each epoch


def test_test_split_is_one_pass_with_a_partial_last_batch() -> None:
    job = _job({"type": "synthetic", "num_test": 20}, batch_size=8)
    sizes = [b["label"].shape[0] for b in make_data(job, "test")]
    assert sizes == [8, 8, 4]


def test_batch_size_larger_than_the_data_is_refused() -> None:
    job = _job({"type": "synthetic", "num_train": 10}, batch_size=16)
    with pytest.raises(ConfigError, match="batch_size"):
        make_data(job, "train")


def test_synthetic_text_labels_are_the_next_character() -> None:
    from servelab.train.data import SyntheticTextConfig, load_arrays

    arrays = load_arrays(SyntheticTextConfig(num_train=8, length=10), "train")
    assert arrays["data"].shape == (8, 10)
    np.testing.assert_array_equal(arrays["label"][:, :-1], arrays["data"][:, 1:])
    assert (arrays["data"] == 0).any() and arrays["data"].max() < 12  # spaces between words; letters 1..11


def test_digits_are_scikit_learns_images_scaled_to_unit_range() -> None:
    from servelab.train.data import DigitsConfig, load_arrays

    train, test = load_arrays(DigitsConfig(), "train"), load_arrays(DigitsConfig(), "test")
    assert train["data"].shape[1:] == (1, 8, 8) and len(train["data"]) + len(test["data"]) == 1797
    assert train["data"].min() == 0.0 and train["data"].max() == 1.0
    assert sorted(set(train["label"].tolist())) == list(range(10))
