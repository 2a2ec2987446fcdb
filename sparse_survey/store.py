"""The results store: one JSON record per run, written atomically, read back defensively.

:class:`Store` keeps each run's record at ``<root>/<preset>/<key>.json`` (the key is
:attr:`~sparse_survey.experiment.RunConfig.key`). Records are written atomically (a temporary
file, then a rename), so a killed sweep leaves no half record. Readers skip a file that is not a
valid record, with a warning naming it, and see every record's config in the current layout
(:func:`~sparse_survey.experiment.upgrade`); :meth:`Store.rekey` migrates files whose name is an
earlier key of their config.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .experiment import BUDGET, PRESETS, SCHEMA, RunConfig, config_dict, config_from_dict
from .files import atomic_write


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as JSON atomically (see :func:`sparse_survey.files.atomic_write`), so that a
    process killed mid-write leaves no half file."""
    text = json.dumps(data, indent=1, allow_nan=True)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


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
        """The stored record of ``config`` (None when there is none, or it is broken)."""
        path = self.path(config)
        return read_record(path) if path.exists() else None

    def done(self, config: RunConfig, retry_diverged: bool = False) -> bool:
        """Whether ``config`` has a record that a sweep should keep: finished, or diverged unless
        ``retry_diverged``."""
        record = self.get(config)
        kept = ("finished",) if retry_diverged else ("finished", "diverged")
        return record is not None and record["status"] in kept

    def write(self, record: dict) -> Path:
        return write_json(self.root / record["config"]["preset"] / f"{record['key']}.json",
                          record)

    def check_writable(self, preset: str) -> None:
        """Raise a clear error now, before any training, if records of ``preset`` cannot be
        written."""
        folder = self.root / preset
        try:
            write_json(folder / ".writable", {}).unlink()
        except OSError as error:
            raise ValueError(f"cannot write run records to {folder} ({error}); choose another "
                             "results folder (--results)") from error

    def records(self, preset: str, stale: bool = False) -> list[dict]:
        """The stored records of a preset (broken files skipped, with a warning). Records made
        under an earlier definition of a named preset (another model, data or recipe) are left
        out unless ``stale=True``, so tables never mix budgets."""
        paths = sorted((self.root / preset).glob("*.json"))
        records = [r for r in map(read_record, paths) if r is not None]
        return records if stale else current_records(records, preset)

    def rekey(self, preset: str) -> list[tuple[Path, Path]]:
        """Migrate the records of ``preset`` whose file is not named by their config's current
        key (records of an earlier schema, or written with compression ``1.0`` before keys were
        canonical): rewrite each, in the current layout, under its key. A record whose key is
        taken by another file already is renamed to ``<name>.superseded`` (kept, no longer read).
        Returns the moves."""
        moves = []
        for path in sorted((self.root / preset).glob("*.json")):
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


def read_record(path: str | os.PathLike) -> dict | None:
    """A stored record with its config in the current layout and its key and label those of
    that config; None, with a warning naming the file, when it is not a record (not JSON, or
    missing what every record holds)."""
    try:
        record = json.loads(Path(path).read_text())
        if not isinstance(record, dict):
            raise ValueError(f"it holds a JSON {type(record).__name__}, not an object")
        needed = RECORD_KEYS + (FINISHED_KEYS if record.get("status") == "finished" else ())
        missing = [k for k in needed if k not in record]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        config = config_from_dict(record["config"])
    except (OSError, ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        warnings.warn(f"skipping {path}: not a valid run record ({error}); a sweep runs it again",
                      stacklevel=2)
        return None
    return {**record, "config": config_dict(config), "key": config.key, "label": config.label}


def current_records(records: list[dict], preset: str) -> list[dict]:
    """The records made under the current definition of ``preset`` (all, for a name that is not
    one of the presets)."""
    if preset not in PRESETS:
        return records
    current = config_dict(RunConfig.from_preset(preset, "dense", 0))
    return [r for r in records if all(r["config"].get(k) == current[k] for k in BUDGET)]
