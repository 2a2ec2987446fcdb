"""Datasets as whole uint8 tensors, and a fast loader that augments on the device.

:func:`load` returns a ``(train, test)`` pair of :class:`ImageSet` objects: every image of a split
in one ``uint8`` tensor of shape ``(N, C, H, W)`` plus its labels. Small image sets fit in memory
(CIFAR-10 is 180 MB), so the :class:`Loader` moves a whole split to the training device once and
does normalisation, random crops and flips there in batches, in the spirit of airbench: no worker
processes, no per-image Python.

Where CIFAR-10 comes from, in the order tried (``root``, or where it is not given
``$SPARSE_SURVEY_DATA``, then the default folder ``~/.cache/sparse_survey/data``; a ``root`` that
does not exist is an error, not a reason to look elsewhere):

- torchvision's CIFAR-10 (a folder holding ``cifar-10-batches-py``);
- an ImageFolder-layout folder (``train/<class>/*.jpg`` and ``test/<class>/*.jpg``), or a
  ``.zip`` or ``.tar.gz`` of one, or a folder holding such an archive;
- torchvision's download into the default folder, when ``download=True`` and the internet is there.

Decoding 60,000 JPEGs takes a while (10-20 s, with a progress bar), so the decoded arrays are
cached once per archive or folder as an ``.npz`` file in ``$SPARSE_SURVEY_CACHE`` (default
``~/.cache/sparse_survey``); a second load reads that file in well under two seconds. When the
source changes (an archive downloaded again), its new cache replaces the old one.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .files import atomic_write, remove_stale_temporaries

DATASETS = ("cifar10", "digits")
SHAPES = {"cifar10": (3, 32, 32), "digits": (1, 8, 8)}  # one image: (channels, height, width)
NUM_CLASSES = {"cifar10": 10, "digits": 10}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
CIFAR10_ARCHIVES = ("cifar10-jpeg.zip", "cifar10-jpeg.tar.gz", "cifar10.zip", "cifar10.tar.gz")


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor downloadable; says where it looked."""


class DataError(ValueError):
    """Raised when data is there but damaged (a truncated archive, a bad checksum, an image that
    does not decode); names the file."""


@dataclass(frozen=True)
class ImageSet:
    """One split of an image data set, held whole in memory.

    ``mean`` and ``std`` are per-channel statistics of the full training split on the 0-1 scale
    (the loader normalises with them); ``crop_padding`` and ``flip`` say how to augment it.
    """

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    crop_padding: int = 4
    flip: bool = True

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.images.shape[1:])

    def per_class(self, n: int, seed: int = 0) -> ImageSet:
        """A seeded random subset of at most ``n`` images of each class (in dataset order)."""
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(self.classes)):
            idx = (self.labels == c).nonzero().flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
        keep = torch.cat(keep).sort().values
        return replace(self, images=self.images[keep], labels=self.labels[keep])


def load(name: str, root: str | os.PathLike | None = None, limit_per_class: int | None = None,
         download: bool = True, cache_dir: str | os.PathLike | None = None,
         progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """The ``(train, test)`` splits of a dataset.

    ``limit_per_class`` keeps a fixed, seeded subset of that many images per class in each split
    (for the small presets and tests). ``root`` and ``download`` apply to CIFAR-10 only;
    ``progress`` shows the bars of a first decode.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be at least 1, got {limit_per_class}")
    train, test = digits() if name == "digits" else cifar10(root, download, cache_dir, progress)
    if limit_per_class is not None:
        train, test = train.per_class(limit_per_class), test.per_class(limit_per_class)
    return train, test


# ---------------------------------------------------------------------------------------- digits

def digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 handwritten 8x8 digits (shipped with the package, so offline),
    split 75/25 stratified with a fixed seed. Augmented by 1-pixel crops, never flipped."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    x_tr, x_te, y_tr, y_te = train_test_split(images, d.target, test_size=0.25,
                                              stratify=d.target, random_state=0)
    classes = tuple(str(c) for c in range(10))
    return _pair("digits", classes, x_tr, y_tr, x_te, y_te, crop_padding=1, flip=False)


def _pair(name, classes, x_tr, y_tr, x_te, y_te, crop_padding=4, flip=True, stats=None):
    """Wrap numpy arrays as a (train, test) pair of ImageSets normalised by the train split."""
    mean, std = stats if stats is not None else channel_stats(x_tr)

    def imageset(x, y) -> ImageSet:
        return ImageSet(torch.from_numpy(np.ascontiguousarray(x)),
                        torch.from_numpy(np.asarray(y, dtype=np.int64)), tuple(classes),
                        tuple(float(v) for v in mean), tuple(float(v) for v in std), name,
                        crop_padding, flip)

    return imageset(x_tr, y_tr), imageset(x_te, y_te)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images on the 0-1 scale."""
    total, squares = np.zeros(images.shape[1]), np.zeros(images.shape[1])
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].astype(np.float64) / 255
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    n = len(images) * images.shape[2] * images.shape[3]
    mean = total / n
    return mean.tolist(), np.sqrt(squares / n - mean**2).tolist()


# --------------------------------------------------------------------------------------- CIFAR-10

def default_data_dir() -> Path:
    return Path(os.environ.get("SPARSE_SURVEY_DATA_DIR", Path.home() / ".cache/sparse_survey/data"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPARSE_SURVEY_CACHE", Path.home() / ".cache/sparse_survey"))


def cifar10(root=None, download: bool = True, cache_dir=None,
            progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from the first source found (see the module docstring), else a clear error. An
    image folder or archive must hold what CIFAR-10 is (see :func:`check_cifar10`)."""
    if root is not None and not Path(root).expanduser().exists():
        raise DataNotFoundError(f"the CIFAR-10 location given, {root}, does not exist (the data "
                                "was not looked for anywhere else: check the path)")
    chosen = root if root is not None else os.environ.get("SPARSE_SURVEY_DATA")
    candidates = [Path(chosen).expanduser()] if chosen else []
    candidates.append(default_data_dir())
    for path in candidates:
        source = _find_cifar10(path)
        if source is None:
            continue
        if (source / "cifar-10-batches-py").is_dir():
            return _torchvision_cifar10(source, download=False)
        train, test = image_folder(source, cache_dir, progress)
        check_cifar10(train, test, source)
        name = "CIFAR-10 (JPEG q75)" if "jpeg" in source.name.lower() else \
            f"CIFAR-10 ({source.name})"
        return replace(train, name=name), replace(test, name=name)
    if download:
        try:
            return _torchvision_cifar10(default_data_dir(), download=True)
        except Exception as error:  # no internet, a proxy, a full disk: say what was tried
            failure = f"the download into {default_data_dir()} failed ({error})"
    else:
        failure = "downloading was not allowed (download=False)"
    looked = "\n".join(f"  - {p}" for p in candidates)
    raise DataNotFoundError(
        f"CIFAR-10 was not found. Looked in:\n{looked}\nand {failure}.\n"
        "Provide it in one of these ways:\n"
        "  - with internet: let torchvision download it (the default), or\n"
        "  - pass root=... (command line: --data-root) or set SPARSE_SURVEY_DATA to a folder\n"
        "    holding torchvision's cifar-10-batches-py, or to an ImageFolder-layout folder\n"
        "    (train/<class>/*.jpg, test/<class>/*.jpg), or to a .zip or .tar.gz of one.")


def _find_cifar10(path: Path) -> Path | None:
    """The usable CIFAR-10 source at or directly inside ``path``, if any."""
    if path.is_file():
        return path if path.name.endswith(ARCHIVE_SUFFIXES) else None
    if not path.is_dir():
        return None
    if (path / "cifar-10-batches-py").is_dir() or (path / "train").is_dir():
        return path
    if path.name == "cifar-10-batches-py":
        return path.parent
    for archive in CIFAR10_ARCHIVES:
        if (path / archive).is_file():
            return path / archive
    return None


def _torchvision_cifar10(root: Path, download: bool) -> tuple[ImageSet, ImageSet]:
    from torchvision.datasets import CIFAR10

    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=download)
    return _pair("CIFAR-10", train.classes, train.data.transpose(0, 3, 1, 2), train.targets,
                 test.data.transpose(0, 3, 1, 2), test.targets)  # (N, H, W, C) -> (N, C, H, W)


def image_folder(source: Path, cache_dir=None,
                 progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """The ``(train, test)`` splits of an ImageFolder tree (a folder, or a zip or tar archive of
    one; see :func:`decode_image_folder`), named after it. Decoded once; later loads read the
    cached arrays. A damaged cache file is decoded again (with a warning naming it); where the
    cache cannot be written, the data is used uncached (with a warning). Writing a source's cache
    removes its outdated ones (see :func:`cache_file`)."""
    cache = cache_file(source, cache_dir)
    remove_stale_temporaries(cache)
    arrays = _read_cache(cache)
    if arrays is None:
        arrays = decode_image_folder(source, progress)
        try:
            atomic_write(cache, lambda tmp: _write_arrays(tmp, arrays))
        except OSError as error:
            warnings.warn(f"cannot write the decoded-image cache {cache} ({error}); going on "
                          "without it, so the next load decodes again", stacklevel=3)
        else:
            remove_outdated_caches(cache)
    return _pair(_stem(source), arrays["classes"].tolist(), arrays["train_x"], arrays["train_y"],
                 arrays["test_x"], arrays["test_y"], stats=(arrays["mean"], arrays["std"]))


CACHED_ARRAYS = ("classes", "train_x", "train_y", "test_x", "test_y", "mean", "std")


def cache_file(source: Path, cache_dir=None) -> Path:
    """The cache file of an image source: ``<name>-<where>-<version>.npz``, ``where`` a digest of
    the source's path and ``version`` one of its contents' sizes and times (see
    :func:`_fingerprint`), so that a changed source gets a new file and its old one is known."""
    where = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    name = f"{_stem(source)}-{where}-{_fingerprint(source)}.npz"
    return Path(cache_dir or default_cache_dir()) / name


def remove_outdated_caches(cache: Path) -> list[Path]:
    """Remove the cache files that ``cache`` supersedes, and return them: the same source's other
    versions, and files of the same name in the old naming, ``<name>-<digest>.npz``, which this
    version never reads. Each is a whole decoded data set (180 MB for CIFAR-10)."""
    name, where, _ = cache.stem.rsplit("-", 2)
    outdated = [p for p in cache.parent.glob(f"{name}-*.npz") if p != cache and (
        p.stem.startswith(f"{name}-{where}-") or _old_name(p.stem, name))]
    for path in outdated:
        path.unlink(missing_ok=True)
    return outdated


def _old_name(stem: str, name: str) -> bool:
    digest = stem.removeprefix(f"{name}-")
    return len(digest) == 12 and all(ch in "0123456789abcdef" for ch in digest)


def _fingerprint(source: Path) -> str:
    """A digest of what the decoded arrays depend on: for an archive, its size and modification
    time; for a folder, those of every file below it (so that images added under
    ``train/<class>/`` are seen)."""
    digest = hashlib.sha1()
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        stat = path.stat()
        name = str(path.relative_to(source)) if path != source else ""
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _read_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache file or it is damaged (then it is
    removed, with a warning naming it)."""
    if not cache.exists():
        return None
    try:
        with np.load(cache) as z:
            return {k: z[k] for k in CACHED_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(f"the decoded-image cache {cache} is damaged ({error!r}); decoding the "
                      "images again", stacklevel=4)
        cache.unlink(missing_ok=True)
        return None


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name or "images"


def decode_image_folder(source: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """Decode every image of an ImageFolder tree with ``train`` and ``test`` splits into arrays.

    Files are ordered by (split, class, file name), so the result does not depend on the order of
    an archive's members; classes are the sorted class folder names (torchvision's convention).
    Both splits must hold the same classes, every image the same size, and every image must be
    colour (RGB): a grayscale or paletted image is refused rather than silently made RGB.
    """
    from PIL import Image

    try:
        files = sorted(tqdm(_image_files(source), desc=f"reading {source.name}",
                            unit=" images", leave=False, disable=not progress))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(f"{source} is damaged or truncated ({error}); copy or download it "
                        "again") from error
    if not files:
        raise DataNotFoundError(f"{source} holds no images in train/<class>/ and test/<class>/")
    classes = sorted({c for _, c, _, _ in files})

    def decode(file: tuple[str, str, str, bytes]) -> np.ndarray:
        split, label, name, blob = file
        try:
            with Image.open(io.BytesIO(blob)) as im:
                mode, pixels = im.mode, np.asarray(im)
        except (OSError, ValueError) as error:  # PIL: unidentified or truncated image
            raise DataError(f"{split}/{label}/{name} in {source} is not a readable image "
                            f"({error})") from error
        if mode != "RGB":
            raise DataError(f"{split}/{label}/{name} in {source} is a {mode}-mode image, not "
                            "RGB: this data set's images are colour (convert it, or use "
                            "another data set)")
        return pixels

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # Pillow releases the GIL while decoding
        pixels = list(tqdm(pool.map(decode, files), total=len(files),
                           desc=f"decoding {source.name} (once; cached)", unit=" images",
                           leave=False, disable=not progress))
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise DataError(f"images in {source} differ in size: {sorted(shapes)[:5]}")
    per_split = {split: sorted({c for s, c, _, _ in files if s == split})
                 for split in ("train", "test")}
    if per_split["train"] and per_split["test"] and per_split["train"] != per_split["test"]:
        only = {s: sorted(set(per_split[s]) - set(per_split[o]))
                for s, o in (("train", "test"), ("test", "train"))}
        raise DataError(f"the splits of {source} hold different classes: "
                        + "; ".join(f"only in {s}/: {', '.join(c)}" for s, c in only.items() if c))
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split in ("train", "test"):
        pick = [i for i, f in enumerate(files) if f[0] == split]
        if not pick:
            raise DataNotFoundError(f"{source} has no {split}/<class>/ images")
        out[f"{split}_x"] = np.stack([pixels[i] for i in pick]).transpose(0, 3, 1, 2).copy()
        out[f"{split}_y"] = np.array([classes.index(files[i][1]) for i in pick], dtype=np.int64)
    out["mean"], out["std"] = map(np.array, channel_stats(out["train_x"]))
    return out


CIFAR10_SHAPE, CIFAR10_CLASSES = SHAPES["cifar10"], NUM_CLASSES["cifar10"]


def check_cifar10(train: ImageSet, test: ImageSet, source: Path) -> None:
    """Refuse an image folder loaded as CIFAR-10 that is not shaped like it: 10 classes, images
    of every class in both splits, 32x32 RGB images. Training on anything else as CIFAR-10 (a
    model built for 10 classes, a class missing from the test set) would give a wrong number
    without a word."""
    if len(train.classes) != CIFAR10_CLASSES:
        raise DataError(f"{source} holds {len(train.classes)} classes "
                        f"({', '.join(train.classes)}); CIFAR-10 has {CIFAR10_CLASSES}")
    if train.shape != CIFAR10_SHAPE:
        c, h, w = train.shape
        raise DataError(f"{source} holds {h}x{w} images with {c} channel(s); CIFAR-10's are "
                        f"{CIFAR10_SHAPE[1]}x{CIFAR10_SHAPE[2]} RGB")
    for split, images in (("train", train), ("test", test)):
        missing = sorted(set(range(CIFAR10_CLASSES)) - set(images.labels.unique().tolist()))
        if missing:
            raise DataError(f"{source}: {split}/ has no images of "
                            f"{', '.join(train.classes[i] for i in missing)}")


def _image_files(source: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file name, bytes) of each image under ``<split>/<class>/`` in a folder, a
    zip or a tar archive; any leading folders before the split are allowed."""

    def parse(member: str):
        parts = Path(member).parts
        if len(parts) >= 3 and parts[-3] in ("train", "test") and \
                parts[-1].lower().endswith(IMAGE_SUFFIXES):
            return parts[-3], parts[-2], parts[-1]
        return None

    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_file() and (key := parse(str(path.relative_to(source)))):
                yield (*key, path.read_bytes())
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            for info in z.infolist():
                if not info.is_dir() and (key := parse(info.filename)):
                    yield (*key, z.read(info))
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:  # streams: one pass over a gzip archive
            for member in tar:
                if member.isfile() and (key := parse(member.name)):
                    yield (*key, tar.extractfile(member).read())
    else:
        raise DataNotFoundError(f"{source} is neither a folder nor a readable zip or tar archive "
                                "(a truncated download is neither)")


# ----------------------------------------------------------------------------------------- loader

class Loader:
    """Batches of one :class:`ImageSet`, held whole on ``device`` as uint8.

    Training loaders (``train=True``) reshuffle every epoch and augment with a random crop after
    zero-padding (``data.crop_padding`` pixels, like torchvision's ``RandomCrop(padding=...)``) and
    a horizontal flip with probability 1/2 (when ``data.flip``); they drop the last partial batch.
    All randomness comes from a CPU generator seeded by ``(seed, epoch)``, so an epoch's batches are
    the same for a seed on any device. Evaluation loaders keep order and every image.
    """

    def __init__(self, data: ImageSet, batch_size: int, device: str | torch.device = "cpu",
                 train: bool = False, seed: int = 0, channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if train and batch_size > len(data):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(data)} training images "
                             "(the last partial batch is dropped, so no batch would remain)")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(data.std, device=self.device).view(shape) * 255
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.padding, self.flip = data.crop_padding, data.flip
        self.channels_last = channels_last
        self.epoch = 0  # the next epoch to serve; set it to resume mid-run

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).to(self.device)
            shifts = torch.randint(0, 2 * self.padding + 1, (2, n), generator=g).to(self.device)
            flips = (torch.rand(n, generator=g) < 0.5).to(self.device)
            self.epoch += 1
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if self.train:
                pick = order[idx]
                x = self.images[pick]
                x = random_crop(x, self.padding, shifts[:, idx])
                if self.flip:
                    x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(3), x)
                y = self.labels[pick]
            else:
                x, y = self.images[idx], self.labels[idx]
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def random_crop(x: torch.Tensor, padding: int, shifts: torch.Tensor) -> torch.Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its zero-padded copy at offsets ``shifts``
    (2, B): row and column of the crop's corner, each in ``0 .. 2 * padding``."""
    if padding == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = shifts[0].view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
    cols = shifts[1].view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
