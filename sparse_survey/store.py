"""The results store: one JSON record per run, written atomically, read back defensively.

:class:`Store` keeps each run's record at ``<root>/<preset>/<key>.json`` (the key is
:attr:`~sparse_survey.experiment.RunConfig.key`). Records are written atomically (a temporary
file, then a rename), so a killed sweep leaves no half record. Readers skip a file that is not a
valid record, with a warning naming it, and see every record's config in the current layout
(:func:`~sparse_survey.experiment.upgrade`); :meth:`Store.rekey` migrates files whose name is an
earlier key of their config.

Only a file named like a key (16 hexadecimal digits) is a record: a stray copy such as
``old-<key>.json`` is named in a warning and never counted, moved or overwritten. A record written
by a newer version of the package (a higher ``schema``) is refused, not read as current: reading
it would misread its fields, and rewriting it would lose them.

Sweeps on one store share its work: a sweep claims a run (:meth:`Store.claim`, an exclusive
``flock`` on ``<key>.lock`` that the kernel releases when the process ends, however it ends) before
running it, and a run claimed by another process is left to that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from .experiment import BUDGET, PRESETS, SCHEMA, RunConfig, config_dict, config_from_dict
from .files import atomic_write


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON atomically (see :func:`sparse_survey.files.atomic_write`), so that a
    process killed mid-write leaves no half file."""
    text = json.dumps(data, indent=1, allow_nan=True)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


KEY_NAME = re.compile(r"[0-9a-f]{16}")  # the file name (stem) of a record: a run's key


class NewerRecordError(ValueError):
    """A record written by a newer version of the package (a higher schema than :data:`SCHEMA`)."""


class Store:
    """One JSON file per run under ``root/<preset>/<key>.json``.

    A run counts as done when its record finished or diverged (a diverged run is a result: its
    recipe blew up); a failed run (missing data, a full disk, a bug) and a broken file are run
    again by the next sweep."""

    def __init__(self, root: str | os.PathLike = "results"):
        self.root = Path(root)

    def path(self, config: RunConfig) -> Path:
        return self.root / config.preset / f"{config.key}.json"

    def get(self, config: RunConfig) -> dict | None:
        """The stored record of ``config`` (None when there is none, it is broken, or the file
        holds another run's record: the next sweep moves that to its own key)."""
        path = self.path(config)
        record = read_record(path) if path.is_file() else None
        return record if record is not None and record["key"] == config.key else None

    def done(self, config: RunConfig, retry_diverged: bool = False) -> bool:
        """Whether ``config`` has a record that a sweep should keep: finished, or diverged unless
        ``retry_diverged``."""
        record = self.get(config)
        kept = ("finished",) if retry_diverged else ("finished", "diverged")
        return record is not None and record["status"] in kept

    def write(self, record: dict) -> Path:
        return write_json(self.root / record["config"]["preset"] / f"{record['key']}.json",
                          record)

    def check_writable(self, preset: str, option: str = "--results") -> None:
        """Raise a clear error now, before any training, if records of ``preset`` cannot be
        written; it names ``option``, the way the user chose the folder."""
        folder = self.root / preset
        try:
            write_json(folder / ".writable", {}).unlink()
        except OSError as error:
            raise ValueError(f"cannot write run records to {folder} ({error.strerror or error});"
                             f" choose another results folder ({option})") from None

    def records(self, preset: str, stale: bool = False) -> list[dict]:
        """The stored records of a preset (broken files skipped, with a warning). Records made
        under an earlier definition of a named preset (another model, data or recipe) are left
        out unless ``stale=True``, so tables never mix budgets."""
        found: dict[str, list[tuple[Path, dict]]] = {}
        for path in self.record_paths(preset):
            record = read_record(path)
            if record is not None:
                found.setdefault(record["key"], []).append((path, record))
        records = []
        for key, copies in found.items():  # the file named by the run's key first
            copies.sort(key=lambda copy: copy[0].stem != key)
            records.append(copies[0][1])
            for path, _ in copies[1:]:
                warnings.warn(f"skipping {path}: the same run as {copies[0][0]}, under an "
                              "earlier key; a sweep migrates it", stacklevel=2)
        return records if stale else current_records(records, preset)

    def record_paths(self, preset: str) -> list[Path]:
        """The record files of a preset: ``<key>.json``. Any other JSON file there (a copy, a
        backup) is named in a warning and left alone: it must never count as a run."""
        paths = []
        for path in sorted((self.root / preset).glob("*.json")):
            if KEY_NAME.fullmatch(path.stem):
                paths.append(path)
            else:
                warnings.warn(f"ignoring {path}: not named by a run key (<16 hex digits>.json), "
                              "so not a run record of this store; move it out of the store",
                              stacklevel=3)
        return paths

    @contextlib.contextmanager
    def claim(self, config: RunConfig) -> Iterator[bool]:
        """Claim ``config``'s run for this process while the block runs; yields False when
        another process holds it (then leave the run to that one). The claim is an exclusive,
        non-blocking ``flock`` on ``<key>.lock``, which the kernel drops when the holder exits,
        so a killed sweep leaves nothing to clean up."""
        path = self.path(config).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(path, "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                yield False
                return
            try:  # the file may have been removed by its last holder after we opened it
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
            handle.close()

    def wait(self, config: RunConfig) -> None:
        """Wait until no other process holds ``config``'s claim (see :meth:`claim`): until
        another sweep that is training the run has stored it, or ended."""
        path = self.path(config).with_suffix(".lock")
        if not path.exists():
            return
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)  # blocks while a holder has it exclusively

    def check_target(self, config: RunConfig) -> None:
        """Raise a clear error now, before a run trains, if its record could not be written
        where it belongs: a folder (or something else) in the way of ``<key>.json``."""
        path = self.path(config)
        if path.exists() and not path.is_file():
            raise ValueError(f"cannot store the run {config.label} (c={config.compression:g}, "
                             f"seed {config.seed}): {path} is not a file; move it out of the "
                             "store")

    def claimed(self, config: RunConfig) -> bool:
        """Whether another process holds ``config``'s claim now (see :meth:`claim`)."""
        with self.claim(config) as mine:
            return not mine

    def rekey(self, preset: str) -> list[tuple[Path, Path]]:
        """Migrate the records of ``preset`` whose file is not named by their config's current
        key (records of an earlier schema, or written with compression ``1.0`` before keys were
        canonical): rewrite each, in the current layout, under its key. A record whose key is
        taken by another file already is renamed to ``<name>.superseded`` (kept, no longer read).
        Returns the moves."""
        moves = []
        for path in self.record_paths(preset):
            record = read_record(path)
            if record is None or (path.stem == record["key"]
                                  and record.get("schema") == SCHEMA):
                continue
            target = path.with_name(f"{record['key']}.json")
            if target.exists() and target != path:
                target = path.with_name(f"{path.name}.superseded")
                os.replace(path, target)
            else:
                write_json(target, {**record, "schema": SCHEMA})
                if target != path:
                    path.unlink()
            moves.append((path, target))
        return moves


RECORD_KEYS = ("key", "config", "status", "label")
FINISHED_KEYS = ("metrics", "history", "layer_densities", "timings", "environment")
STATUSES = ("finished", "diverged", "failed")


def read_record(path: str | os.PathLike) -> dict | None:
    """A stored record with its config in the current layout and its key and label those of
    that config; None, with a warning naming the file, when it is not a record (not JSON,
    missing what every record holds, or a value of the wrong kind, e.g. ``"metrics": null``).
    Raises :class:`NewerRecordError` for a record of a newer schema than this package reads."""
    try:
        return parse_record(Path(path).read_text(), path)
    except NewerRecordError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        warnings.warn(f"skipping {path}: not a valid run record ({error}); a sweep runs it again",
                      stacklevel=2)
        return None


def parse_record(text: str, where: str | os.PathLike) -> dict:
    """The record a JSON text holds (see :func:`read_record`), named ``where`` in errors;
    raises ValueError, TypeError or KeyError saying what is wrong, :class:`NewerRecordError`
    for a newer schema."""
    record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError(f"it holds a JSON {type(record).__name__}, not an object")
    schema = record.get("schema", 1)
    if _real(schema) and schema > SCHEMA:  # 99 or 99.0: newer, not broken
        raise NewerRecordError(
            f"{where} is a record of schema {schema}, written by a newer sparse_survey (this "
            f"one reads schemas up to {SCHEMA}); upgrade the package to read it, or move "
            "the file out of the store. It is neither read nor rewritten.")
    check_shape(record)
    environment = record.get("environment")
    config = config_from_dict(record["config"], environment.get("device")
                              if isinstance(environment, dict) else None)
    return {**record, "config": config_dict(config), "key": config.key, "label": config.label}


def check_shape(record: dict) -> None:
    """Raise ValueError, saying what is wrong, unless ``record`` has the shape of a run record:
    what every record holds, a known status, and for a finished run its metrics (a finite test
    accuracy between 0 and 1) and the other parts of the right kind."""
    schema = record.get("schema", 1)
    if not (isinstance(schema, int) and not isinstance(schema, bool) and 1 <= schema <= SCHEMA):
        raise ValueError(f"its schema is {schema!r}, not a whole number from 1 to {SCHEMA}")
    needed = RECORD_KEYS + (FINISHED_KEYS if record.get("status") == "finished" else ())
    missing = [k for k in needed if k not in record]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"its status is {record['status']!r}, not one of {', '.join(STATUSES)}")
    if not isinstance(record["config"], dict):
        raise ValueError(f"its config is {record['config']!r}, not an object")
    if record["status"] != "finished":
        return
    kinds = {"metrics": dict, "history": list, "layer_densities": dict, "timings": dict,
             "environment": dict}
    for name, kind in kinds.items():
        if not isinstance(record[name], kind):
            raise ValueError(f"its {name} is {record[name]!r:.60}, not a JSON "
                             f"{'object' if kind is dict else 'list'}")
    accuracy = record["metrics"].get("test_acc")
    if not (_real(accuracy) and 0 <= accuracy <= 1):
        raise ValueError(f"its metrics.test_acc is {accuracy!r}, not an accuracy between 0 and 1")
    for section, names in (("metrics", NUMERIC_METRICS), ("timings", None)):
        for name, value in record[section].items():
            numeric = name in names if names else name.endswith("_s")
            if numeric and value is not None and not _real(value):
                raise ValueError(f"its {section}.{name} is {value!r:.40}, not a number")
    for name, density in record["layer_densities"].items():
        if not (_real(density) and 0 <= density <= 1):
            raise ValueError(f"its layer_densities.{name} is {density!r:.40}, not a density "
                             "between 0 and 1")
    histograms = record.get("weight_histograms")
    if not isinstance(histograms, dict) or not all(
            isinstance(h, dict) and all(isinstance(h.get(k), list) and all(map(_real, h[k]))
                                        for k in ("counts", "edges"))
            for h in histograms.values()):
        raise ValueError(f"its weight_histograms are {histograms!r:.60}, not one histogram "
                         "(counts and edges) per layer")
    if not all(isinstance(epoch, dict) for epoch in record["history"]):
        raise ValueError("its history is not a list of epochs (JSON objects)")


# The metrics that tables, figures and estimates compute with: each a number (or null) in a
# finished record.
NUMERIC_METRICS = frozenset({
    "test_acc", "best_test_acc", "density", "remaining_fraction", "flops_fraction",
    "flops_dense", "flops_remaining", "macs_dense", "params_total", "params_nonzero",
    "prunable_total", "prunable_kept", "storage_dense_bytes", "storage_csr_bytes",
    "storage_bitmask_bytes", "time_s", "time_s_min", "time_s_max", "images_per_s", "latency_ms",
    "cpu_rss_peak_bytes", "cpu_uss_peak_bytes", "cpu_rss_increase_bytes",
    "cpu_uss_increase_bytes", "gpu_peak_allocated_bytes", "gpu_peak_reserved_bytes"})


def _real(value) -> bool:
    """A finite JSON number (not a boolean, a string or NaN)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def current_records(records: list[dict], preset: str) -> list[dict]:
    """The records made under the current definition of ``preset`` (all, for a name that is not
    one of the presets)."""
    if preset not in PRESETS:
        return records
    current = config_dict(RunConfig.from_preset(preset, "dense", 0))
    return [r for r in records if all(r["config"].get(k) == current[k] for k in BUDGET)]
