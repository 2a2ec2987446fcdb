import os
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from sparse_survey import data

CLASSES = ("cat", "dog", "frog")


@pytest.fixture
def image_folder(tmp_path):
    """A tiny ImageFolder tree of PNGs (lossless, so decoded pixels are known exactly)."""
    rng = np.random.default_rng(0)
    root, pixels = tmp_path / "tiny", {}
    for split, n in (("train", 4), ("test", 2)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                x = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(x).save(root / split / c / f"{i:04d}.png")
                pixels[(split, c, i)] = x
    return root, pixels


def test_image_folder_loads_with_labels_and_pixels(image_folder, tmp_path):
    root, pixels = image_folder
    train, test = data.image_folder(root, tmp_path / "cache")
    assert train.images.shape == (12, 3, 6, 6) and test.images.shape == (6, 3, 6, 6)
    assert train.classes == CLASSES and train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.array_equal(train.images[5].permute(1, 2, 0).numpy(), pixels[("train", "dog", 1)])
    x = train.images.double() / 255
    assert train.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert train.std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist())


def test_zip_and_tar_gz_of_the_folder_give_the_same_arrays(image_folder, tmp_path):
    root, _ = image_folder
    zipped, tarred = tmp_path / "tiny.zip", tmp_path / "tiny.tar.gz"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in sorted(root.rglob("*.png"), reverse=True):  # order must not matter
            z.write(f, f"tiny/{f.relative_to(root)}")  # nor a leading folder
    with tarfile.open(tarred, "w:gz") as t:
        t.add(root, "tiny")
    reference = data.image_folder(root, tmp_path / "c0")
    for archive in (zipped, tarred):
        got = data.image_folder(archive, tmp_path / "c1")
        for a, b in zip(reference, got):
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_second_load_hits_the_cache(image_folder, tmp_path, monkeypatch):
    root, _ = image_folder
    first = data.image_folder(root, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_decoding(*_):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "decode_image_folder", no_decoding)
    second = data.image_folder(root, tmp_path / "cache")
    assert torch.equal(first[0].images, second[0].images)


def test_a_changed_source_replaces_its_outdated_caches_and_no_others(image_folder, tmp_path):
    root, _ = image_folder
    cache_dir = tmp_path / "cache"
    first = data.cache_file(root, cache_dir)
    data.image_folder(root, cache_dir)
    old_naming = cache_dir / "tiny-0123456789ab.npz"  # this name is never read again
    elsewhere = cache_dir / "tiny-89abcdef-0123456789ab.npz"  # a "tiny" at another path
    other = cache_dir / "other-0123456789ab.npz"
    for path in (old_naming, elsewhere, other):
        path.write_bytes(b"")
    image = next(root.rglob("*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    second = data.cache_file(root, cache_dir)
    assert second != first and second.name.startswith(first.name[:len("tiny-") + 9])
    data.image_folder(root, cache_dir)
    assert sorted(cache_dir.glob("*.npz")) == sorted([second, elsewhere, other])


def test_missing_cifar10_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSE_SURVEY_DATA", raising=False)
    monkeypatch.setenv("SPARSE_SURVEY_DATA_DIR", str(tmp_path / "default"))
    (tmp_path / "nowhere").mkdir()  # given, but holding nothing
    with pytest.raises(data.DataNotFoundError) as error:
        data.load("cifar10", tmp_path / "nowhere", download=False)
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message and str(tmp_path / "default") in message
    assert "SPARSE_SURVEY_DATA" in message and "--data-root" in message
    monkeypatch.setenv("SPARSE_SURVEY_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataNotFoundError, match="typo, does not exist"):  # no fallback
        data.load("cifar10", tmp_path / "typo", download=False)


def test_unknown_dataset_and_bad_limit():
    with pytest.raises(ValueError, match="known datasets: cifar10, digits"):
        data.load("mnist")
    with pytest.raises(ValueError, match="limit_per_class"):
        data.load("digits", limit_per_class=0)


def test_digits_offline_with_a_fixed_stratified_split(digits):
    train, test = digits
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert torch.bincount(test.labels).min() >= 43  # stratified: a quarter of each class
    again = data.load("digits")
    assert torch.equal(train.images, again[0].images)


def test_limit_per_class_takes_a_fixed_subset(digits):
    small, _ = data.load("digits", limit_per_class=5)
    assert torch.bincount(small.labels).tolist() == [5] * 10
    assert torch.equal(small.images, data.load("digits", limit_per_class=5)[0].images)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_is_deterministic_for_a_seed_and_reshuffles_each_epoch(digits):
    train, _ = digits
    a = data.Loader(train, 100, train=True, seed=1)
    b = data.Loader(train, 100, train=True, seed=1)
    first_a, first_b = batches(a), batches(b)
    assert all(torch.equal(x, u) and torch.equal(y, v)
               for (x, y), (u, v) in zip(first_a, first_b))
    assert not torch.equal(batches(a)[0][1], first_a[0][1])  # epoch 2 differs from epoch 1
    other = batches(data.Loader(train, 100, train=True, seed=2))
    assert not torch.equal(other[0][1], first_a[0][1])


def test_training_batches_drop_the_partial_batch_and_keep_shapes(digits):
    train, test = digits
    loader = data.Loader(train, 100, train=True)
    got = batches(loader)
    assert len(got) == len(loader) == len(train) // 100
    assert all(x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 for x, _ in got)
    evaluation = batches(data.Loader(test, 100))
    assert sum(len(y) for _, y in evaluation) == len(test)
    assert torch.equal(torch.cat([y for _, y in evaluation]), test.labels)


def test_random_crop_matches_slicing_the_padded_image():
    x = torch.randint(0, 256, (3, 2, 5, 5), dtype=torch.uint8)
    shifts = torch.tensor([[0, 4, 2], [4, 0, 3]])
    got = data.random_crop(x, 2, shifts)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (r, c) in enumerate(shifts.T.tolist()):
        assert torch.equal(got[i], padded[i, :, r:r + 5, c:c + 5])


def test_augmentation_is_crop_and_flip_of_the_normalised_image(image_folder, tmp_path):
    root, _ = image_folder
    train, _ = data.image_folder(root, tmp_path / "c")
    (x, y), *_ = batches(data.Loader(train, 12, train=True, seed=0))
    mean = torch.tensor(train.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(train.std).view(1, 3, 1, 1) * 255
    raw = torch.nn.functional.pad(train.images.float(), (4,) * 4)
    candidates = [raw[:, :, r:r + 6, c:c + 6] for r in range(9) for c in range(9)]
    candidates += [c.flip(3) for c in candidates]
    pixels = x * std + mean
    for i in range(len(y)):
        assert any(torch.allclose(pixels[i], c[j], atol=1e-3)
                   for c in candidates for j in range(len(train)))


def test_loader_rejects_a_batch_larger_than_the_training_set(digits):
    with pytest.raises(ValueError, match="exceeds"):
        data.Loader(digits[0], 10_000, train=True)


@pytest.mark.cifar10
def test_real_cifar10_loads_fully_and_again_from_the_cache(cifar10, monkeypatch):
    train, test = cifar10
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"
    from conftest import cifar10_source

    def no_decoding(*_):
        raise AssertionError("decoded CIFAR-10 again instead of reading the cache")

    monkeypatch.setattr(data, "decode_image_folder", no_decoding)
    again, _ = data.load("cifar10", cifar10_source())
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
