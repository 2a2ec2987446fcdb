"""The work list: what scarce compute (a GPU quarter-hour, a night of a CPU) works through, in
order, and the archive that carries its records home.

The work list (``worklist.yaml`` at the repository root) is a list of entries, each one sweep: a
``preset``, a ``grid`` as ``sweep --grid`` takes it, and optionally ``precision``, ``compile``
and ``recipe`` (changes to the preset's recipe, e.g. ``{epochs: 20}``, for sizing runs); or one
benchmark (``bench: train`` and its ``args``), measured once per device; ``only_on: cuda`` keeps
an entry for one kind of device (a full-width VGG16 has no place on a CPU). :func:`run_worklist`
works through the entries in order within a time budget: each sweep gets what is left of it and
starts no run that would end past it (:func:`sparse_survey.sweeps.sweep`), and the store skips
what is done, so each call continues where the last stopped. An entry left unfinished ends the
call: later entries wait for it.

What a call made comes home as one archive: :func:`snapshot` the store before, :func:`pack` what
is new or changed after (run records and benchmark records, as ``<preset>/<key>.json`` and
``bench/<name>.json``); :func:`unpack` checks every record of an archive before it enters a
store (a run record must read as one, under its own key), and never replaces a finished record
with another.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
import time
import warnings
from pathlib import Path

from .experiment import PRESETS, RunConfig
from .files import atomic_write
from .store import KEY_NAME, NewerRecordError, Store, parse_record, read_record, write_json
from .sweeps import grid_configs, load_grid, load_yaml, sweep

WORKLIST = Path(__file__).resolve().parents[1] / "worklist.yaml"
ENTRY_KEYS = {"name", "preset", "grid", "precision", "compile", "recipe", "bench", "args",
              "seconds", "only_on"}
BENCHMARKS = ("train",)


def load_worklist(path: str | os.PathLike = WORKLIST) -> list[dict]:
    """The entries of a work list file, each checked: a name, and either a ``preset`` and a
    ``grid`` (made into its run configs once, so a bad value is found now) or a ``bench``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no work list at {path}")
    entries = load_yaml(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path} must hold a list of entries (mappings)")
    for number, entry in enumerate(entries, 1):
        where = f"{path}, entry {number} ({entry.get('name', 'unnamed')})"
        unknown = set(entry) - ENTRY_KEYS
        if unknown or "name" not in entry:
            raise ValueError(f"{where}: needs a name; unknown keys {sorted(unknown)}; known: "
                             f"{sorted(ENTRY_KEYS)}")
        if entry.get("only_on", "cpu") not in ("cpu", "cuda"):
            raise ValueError(f"{where}: only_on must be cpu or cuda, got {entry['only_on']!r}")
        if "bench" in entry:
            if entry["bench"] not in BENCHMARKS:
                raise ValueError(f"{where}: unknown benchmark {entry['bench']!r}; known: "
                                 f"{', '.join(BENCHMARKS)}")
            continue
        if "preset" not in entry or "grid" not in entry:
            raise ValueError(f"{where}: a sweep entry needs a preset and a grid")
        try:
            entry_configs(entry)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return entries


def entry_configs(entry: dict, device: str | None = None) -> list[RunConfig]:
    """The run configs of a sweep entry on ``device`` (None: the machine's default)."""
    if entry["preset"] not in PRESETS:
        raise ValueError(f"unknown preset {entry['preset']!r}")
    fields = {k: entry[k] for k in ("precision", "compile") if k in entry}
    if "recipe" in entry:
        fields["recipe"] = dataclasses.replace(PRESETS[entry["preset"]].recipe,
                                               **entry["recipe"])
    return grid_configs(load_grid(entry["grid"]), entry["preset"], device=device, **fields)


def bench_path(results: Path, entry: dict, device) -> Path:
    """Where a benchmark entry's record of ``device`` is stored (as ``bench train`` names it)."""
    from .bench import device_slug

    return results / "bench" / f"{bench_stem(entry)}-{device_slug(device)}.json"


def bench_stem(entry: dict) -> str:
    """A benchmark entry's record name without its device: the benchmark and the model."""
    return f"{entry['bench']}-{entry.get('args', {}).get('model_name', 'vgg16')}"


def status(entries: list[dict], store: Store, device: str | None = None) -> list[dict]:
    """Per entry, in order: its name, how many of its runs the store holds done (a benchmark:
    whether this device's record is stored), and ``only_on``, the kind of device it is kept
    for when that is not this one (else None). Such an entry is counted all the same (its runs
    are stored under the same keys on any device; its benchmark is done when a device of its
    kind has a record), so the queue a GPU works through can be read where its records land."""
    from .train import device_of

    here = device_of(device)
    rows = []
    for entry in entries:
        kind = entry.get("only_on", here.type)
        elsewhere = kind != here.type
        row = {"name": entry["name"], "only_on": kind if elsewhere else None}
        if "bench" in entry:
            done = (_bench_stored_on(store.root, entry, kind) if elsewhere
                    else bench_path(store.root, entry, here).is_file())
            rows.append({**row, "done": int(done), "runs": 1})
            continue
        configs = entry_configs(entry, kind if elsewhere else device)
        rows.append({**row, "done": sum(store.done(c) for c in configs), "runs": len(configs)})
    return rows


def _bench_stored_on(results: Path, entry: dict, kind: str) -> bool:
    """Whether ``results`` holds a record of a benchmark entry made on any device of ``kind``."""
    for path in (results / "bench").glob(f"{bench_stem(entry)}-*.json"):
        try:
            if json.loads(path.read_text()).get("device") == kind:
                return True
        except (OSError, ValueError, AttributeError):
            continue  # a damaged record is measured again (see bench.py)
    return False


def run_worklist(entries: list[dict], store: Store, time_budget: float,
                 device: str | None = None, cache_dir=None, data_root=None,
                 progress: bool = True, after_each=None) -> list[dict]:
    """Work through ``entries`` in order for at most ``time_budget`` seconds (what is started
    is estimated to end within it; see :func:`sparse_survey.sweeps.sweep`) and return the new
    records. A benchmark entry runs when this device has no record of it and its ``seconds``
    (default 300) fit. An entry left unfinished (time, or runs another process holds) ends the
    call. ``after_each()`` is called after every entry that did something (e.g. to pack)."""
    from .train import device_of

    start, made = time.monotonic(), []
    for entry in applicable(entries, device):
        left = time_budget - (time.monotonic() - start)
        if "bench" in entry:
            path = bench_path(store.root, entry, device_of(device))
            if path.is_file():
                continue
            if entry.get("seconds", 300) > left:
                print(f"{entry['name']}: about {entry.get('seconds', 300)} s, {left:.0f} s "
                      "left: for the next call")
                return made
            _run_bench(entry, path, device)
            if after_each:
                after_each()
            continue
        configs = entry_configs(entry, device)
        if all(store.done(c) for c in configs):
            continue
        print(f"{entry['name']}: {sum(not store.done(c) for c in configs)} of {len(configs)} "
              f"runs to do, {left:.0f} s left", flush=True)
        try:
            records = sweep(configs, store, cache_dir=cache_dir, progress=progress,
                            time_budget=max(left, 1e-9), data_root=data_root,
                            other_precision=True)
        except ValueError as error:
            if "no run fits the time budget" not in str(error):
                raise
            print(f"{entry['name']}: {error}")
            return made
        made += records
        if records and after_each:
            after_each()
        if not all(store.done(c) for c in configs):
            return made
    return made


def applicable(entries: list[dict], device: str | None = None) -> list[dict]:
    """The entries for this kind of device (see ``only_on``)."""
    from .train import device_of

    kind = device_of(device).type
    return [e for e in entries if e.get("only_on", kind) == kind]


def _run_bench(entry: dict, path: Path, device: str | None) -> None:
    from .bench import bench_train

    record = bench_train(device=device, **entry.get("args", {}))
    write_json(path, record)
    print(f"{entry['name']}: stored in {path}")


# ------------------------------------------------------------------------------ the archive

def snapshot(results: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Every JSON file under a results folder, with its size and modification time."""
    root = Path(results)
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*.json")) if p.is_file()}


def pack(results: str | os.PathLike, before: dict, archive: str | os.PathLike) -> list[str]:
    """Write the JSON files under ``results`` that are new or changed since the snapshot
    ``before`` into the tar.gz ``archive`` (atomically), by their paths under ``results``;
    return those paths."""
    root = Path(results)
    changed = [name for name, seen in snapshot(root).items() if before.get(name) != seen]

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in changed:
                tar.add(root / name, arcname=name)

    atomic_write(archive, write)
    return changed


def unpack(archive: str | os.PathLike, results: str | os.PathLike) -> dict[str, list[str]]:
    """Install the records of an archive made by :func:`pack` into a results folder, each
    checked first: a run record must be ``<preset>/<key>.json`` and read as a record of that key
    (:func:`sparse_survey.store.read_record`), a benchmark ``bench/<name>.json`` a JSON object.
    A finished run record already stored is kept; a stored record that is not finished is
    replaced. Returns the paths ``installed``, ``kept`` (already there) and ``refused`` (with
    why, also in a warning)."""
    root, done = Path(results), {"installed": [], "kept": [], "refused": []}
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError) as error:
        raise ValueError(f"{archive} is not a readable tar.gz archive ({error})") from None
    with tar:
        for member in tar.getmembers():
            why = _refusal(member, tar)
            if why:
                done["refused"].append(f"{member.name}: {why}")
                warnings.warn(f"not installed from {archive}: {member.name}: {why}",
                              stacklevel=2)
                continue
            data = tar.extractfile(member).read()
            target = root / member.name
            if target.is_file() and member.name.split("/")[0] != "bench":
                stored = read_record(target)
                if stored is not None and stored["status"] == "finished":
                    done["kept"].append(member.name)
                    continue
            atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
            done["installed"].append(member.name)
    return done


def _refusal(member: tarfile.TarInfo, tar: tarfile.TarFile) -> str | None:
    """Why an archive member may not enter a store, or None."""
    parts = Path(member.name).parts
    if not member.isfile() or member.name.startswith("/") or ".." in parts or len(parts) != 2:
        return "not a file at <preset>/<name>.json"
    folder, name = parts
    if not name.endswith(".json"):
        return "not a JSON file"
    data = tar.extractfile(member).read()
    if folder == "bench":
        try:
            return None if isinstance(json.loads(data), dict) else "not a JSON object"
        except ValueError as error:
            return f"not JSON ({error})"
    if not KEY_NAME.fullmatch(name.removesuffix(".json")):
        return "not named by a run key"
    try:
        record = parse_record(data.decode(), name)
    except NewerRecordError as error:
        return str(error)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        return f"not a valid run record ({error})"
    if record["key"] != name.removesuffix(".json") or record["config"]["preset"] != folder:
        return f"a record of {record['config']['preset']}/{record['key']} under another name"
    return None
