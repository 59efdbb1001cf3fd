"""Where a build's prompts come from: local files, or a Hub dataset named by id (with revision, subset name, split,
data_files) or by an `hf://datasets/...` path; read whole or streamed; with the revision it resolved to.

A Hub source is resolved here, not by `datasets.load_dataset(repo_id)`: to a commit and to the files of the chosen
subset and split (the dataset card's `configs` block), fetched into the huggingface_hub cache, then read with the
datasets builder of their file type. An offline run therefore reads exactly the revision it names from that cache
(`datasets` offline would take whichever cached copy is newest), and what it lacks is named with the `hf download`
command that fetches just those files.

Local sources: a file, a glob or a folder (hidden entries skipped) of .parquet / .jsonl / .json / .csv / .txt files,
all of one kind; a .txt file holds one prompt per line and its column is always "text". They form one split, and
their revision is a hash of their bytes.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hdiff import hub
from hdiff.errors import HdiffError

# file suffix → datasets builder
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}
TEXT_COLUMN = "text"  # the column the "text" builder yields: one prompt per line
CARD = "README.md"
READ_BATCH = 4096  # rows read at a time from a corpus (streamed or not)
HF_PATH = re.compile(r"^hf://datasets/(?P<repo>[^/@]+/[^/@]+)(@(?P<revision>[^/]+))?(/(?P<path>.+))?$")


@dataclass(frozen=True)
class HubDataset:
    """A Hub dataset as a source names it; `data_files` are patterns relative to the repository's root."""

    repo_id: str
    revision: str | None = None
    name: str | None = None
    split: str = "train"
    data_files: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def hub_dataset(path_or_id: str, *, revision: str | None = None, name: str | None = None, split: str = "train",
                data_files: str | list[str] | None = None) -> HubDataset | None:
    """The Hub dataset a source names, or None for local files."""
    patterns = tuple([data_files] if isinstance(data_files, str) else data_files or [])
    if path_or_id.startswith("hf://"):
        match = HF_PATH.match(path_or_id)
        if match is None:
            raise HdiffError(f"{path_or_id}: an hf:// source reads hf://datasets/OWNER/NAME[@REVISION][/PATH]")
        at = unquote(match["revision"]) if match["revision"] else None
        if at and revision and at != revision:
            raise HdiffError(f"{path_or_id}: names revision {at!r} but source.revision is {revision!r}")
        in_repo = (match["path"],) if match["path"] else ()
        return HubDataset(match["repo"], at or revision, name, split, in_repo + patterns)
    if local_files(path_or_id) is not None:
        given = {"revision": revision, "name": name}
        if any(given.values()):
            raise HdiffError(f"{path_or_id}: {', '.join(k for k, v in given.items() if v)} applies to Hub datasets "
                             "only; local files are one split of one subset")
        return None
    return HubDataset(path_or_id, revision, name, split, patterns)


# ---------------------------------------------------------------------------------------------------- local files


def local_files(source: str) -> list[str] | None:
    """The files a local source names, or None when `source` reads as a Hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise HdiffError(f"{source}: folder has no {' / '.join(BUILDERS)} files")
        return files
    if glob.has_magic(source) and not source.startswith("hf://"):
        files = sorted(f for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
        if not files:
            raise HdiffError(f"{source}: no files match this pattern")
        return files
    if source.startswith("hf://"):
        return None
    looks_local = path.suffix.lower() in BUILDERS or not hub.looks_like_hub_id(source)
    if looks_local:
        raise HdiffError(f"{source}: no such file or folder")
    return None


def builder_for(source: str, files: list[str]) -> str:
    """The datasets builder that reads `files` (all of one kind)."""
    suffixes = sorted({Path(f).suffix.lower() for f in files})
    unsupported = [s or "(no extension)" for s in suffixes if s not in BUILDERS]
    if unsupported:
        raise HdiffError(f"{source}: unsupported file type {', '.join(unsupported)}; use {' / '.join(BUILDERS)}")
    builders = {BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise HdiffError(f"{source}: mixes file types {', '.join(suffixes)}; point it at one kind")
    return builders.pop()


def first_text_problem(files: list[str]) -> str | None:
    """`file:line: problem` for the first file that is empty, not UTF-8, or (a .jsonl file) holds a line that is not
    a JSON object; None when every file reads. Run only after a reader failed, to say where."""
    for name in files:
        try:
            with open(name, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            return f"{name}: cannot be read: {exc.strerror or exc}"
        if not any(line.strip() for line in lines):
            return f"{name}: holds no prompts"
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{name}:{number}: not UTF-8 text (byte {exc.start} of the line)"
            if name.endswith(".jsonl") and line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"{name}:{number}: not a JSON object ({exc.msg}, column {exc.colno})"
                if not isinstance(row, dict):
                    return f"{name}:{number}: not a JSON object"
    return None


# ---------------------------------------------------------------------------------------------------- Hub datasets


def _pattern_regex(pattern: str) -> re.Pattern:
    """A data_files glob as the Hub reads it: `*` within one folder, `**` across folders."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern)
    table = {"**": ".*", "**/": "(.*/)?", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts) + "$")


def matching(files: list[str], patterns: tuple[str, ...]) -> list[str]:
    regexes = [_pattern_regex(p) for p in patterns]
    return sorted(f for f in files if any(r.match(f) for r in regexes))


def subset_patterns(dataset: HubDataset, card: dict | None) -> tuple[str, ...]:
    """The data_files patterns of the source's subset and split: given, or from the card's `configs` block; a
    dataset without one is one subset of every supported file."""
    if dataset.data_files:
        return dataset.data_files
    configs = {c.get("config_name", "default"): c for c in (card or {}).get("configs") or []}
    if not configs:
        if dataset.name:
            raise HdiffError(f"dataset {dataset}: has no subsets (no `configs` in its card); remove source.name")
        return tuple(f"**/*{suffix}" for suffix in BUILDERS)
    chosen = dataset.name or ("default" if "default" in configs or len(configs) > 1 else next(iter(configs)))
    if chosen not in configs:
        want = "choose source.name" if dataset.name is None else f"no subset {dataset.name!r}; choose one"
        raise HdiffError(f"dataset {dataset}: {want} of {', '.join(sorted(configs))}")
    data_files = configs[chosen].get("data_files") or []
    if isinstance(data_files, str) or (data_files and isinstance(data_files[0], str)):
        data_files = [{"split": "train", "path": data_files}]
    by_split = {entry["split"]: entry["path"] for entry in data_files}
    if dataset.split not in by_split:
        raise HdiffError(f"dataset {dataset}: subset {chosen!r} has no split {dataset.split!r}; choose one of "
                         f"{', '.join(sorted(by_split))}")
    paths = by_split[dataset.split]
    return (paths,) if isinstance(paths, str) else tuple(paths)


def fetch_command(dataset: HubDataset, patterns: tuple[str, ...] | None = None) -> str:
    """`hf download` of the card and the subset's files (`patterns`; unknown without the card: by the Hub's
    convention, the subset's folder, or every supported file)."""
    if patterns is None:
        patterns = dataset.data_files or ((f"{dataset.name}/*",) if dataset.name else tuple(f"*{s}" for s in BUILDERS))
    return hub.download_command(dataset.repo_id, repo_type="dataset", revision=dataset.revision,
                                include=(CARD, *patterns))


def _offline_error(dataset: HubDataset, patterns: tuple[str, ...] | None = None) -> hub.NotCached:
    return hub.offline_error(f"dataset {dataset} is", [fetch_command(dataset, patterns)])


def _read_card(path: Path) -> dict | None:
    from huggingface_hub import DatasetCard

    return DatasetCard.load(path).data.to_dict() if path.is_file() else None


def _cached_files(dataset: HubDataset) -> tuple[str, list[str]]:
    """Offline: (commit, local paths) of the source's files in the huggingface_hub cache."""
    commit = hub.cached_commit(dataset.repo_id, dataset.revision, "dataset")
    if commit is None:
        raise _offline_error(dataset)
    snapshot = hub.repo_cache_folder(dataset.repo_id, "dataset") / "snapshots" / commit
    card = _read_card(snapshot / CARD)
    if card is None and not dataset.data_files:
        raise _offline_error(dataset)
    patterns = subset_patterns(dataset, card)
    present = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    wanted = matching(present, patterns)
    if not wanted:
        raise _offline_error(dataset, patterns)
    return commit, [str(snapshot / f) for f in wanted]


def _fetched_files(dataset: HubDataset) -> tuple[str, list[str]]:
    """Online: (commit, local paths) of the source's files, fetched into the huggingface_hub cache."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().dataset_info(dataset.repo_id, revision=dataset.revision)
        files = [s.rfilename for s in info.siblings or []]
        patterns = subset_patterns(dataset, info.card_data.to_dict() if info.card_data else None)
        wanted = matching(files, patterns)
        if not wanted:
            raise HdiffError(f"dataset {dataset}: no files match {', '.join(patterns)}")
        # by the revision's name, so that the cache records what it resolved to (an offline run reads that); the
        # card too, so that it finds the subsets
        paths = [hf_hub_download(dataset.repo_id, f, repo_type="dataset", revision=dataset.revision)
                 for f in ([CARD] if CARD in files else []) + wanted]
    except (HfHubHTTPError, OSError) as exc:
        raise HdiffError(f"could not fetch dataset {dataset} from the Hub: {_first_line(exc)}") from None
    if any(Path(p).parents[len(Path(f).parts) - 1].name != info.sha for p, f in zip(paths[-len(wanted):], wanted)):
        raise HdiffError(f"dataset {dataset} changed on the Hub while its files were fetched; run again")
    return info.sha, paths[-len(wanted):]


def resolve_hub_files(dataset: HubDataset) -> tuple[str, list[str]]:
    """(commit sha, local paths of the subset's and split's files) for a Hub dataset: from the cache offline, else
    fetched (only those files and the card)."""
    return _cached_files(dataset) if hub.offline() else _fetched_files(dataset)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------------- reading


@dataclass
class Corpus:
    """An opened source: its rows (read in batches, streamed or from datasets' Arrow cache), its revision, and how
    it is named in records."""

    dataset: Any  # datasets.Dataset, datasets.IterableDataset, or a ParquetStream
    column: str
    keep: list[str]
    revision: str | None
    label: str
    files: list[str]

    def rows(self) -> Iterator[tuple[object, dict[str, Any]]]:
        """(prompt value, kept columns) per row, in source order."""
        columns = [self.column, *self.keep]
        batches = (self.dataset.batches(columns) if isinstance(self.dataset, ParquetStream)
                   else self.dataset.select_columns(columns).iter(batch_size=READ_BATCH))
        try:
            for batch in batches:
                kept = [batch[name] for name in self.keep]
                for i, value in enumerate(batch[self.column]):
                    yield value, {name: _jsonable(values[i]) for name, values in zip(self.keep, kept)}
        except UnicodeDecodeError as exc:  # pyarrow reads bytes lazily: a bad one shows when the column is read
            raise HdiffError(first_text_problem(self.files) or f"{self.label}: not UTF-8 text ({exc.reason})") from None

    def source_row(self, row: int, columns: dict[str, Any]) -> dict[str, Any]:
        """The `source` field of a record (hdiff.records.SourceRow) for the prompt first read at `row`."""
        return {"dataset": self.label, "revision": self.revision, "row": row, "columns": columns}


class ParquetStream:
    """Parquet files streamed a row group's batch at a time with pyarrow's ParquetFile.iter_batches.

    `datasets` streams parquet through pyarrow's dataset scanner, whose memory grows with the rows read
    (apache/arrow#39808; measured here: 600 MiB at 300,000 rows, 940 MiB at 2,000,000); ParquetFile.iter_batches
    frees each batch, so a streamed corpus's memory stays flat.
    """

    def __init__(self, files: list[str]):
        import pyarrow.parquet as pq

        self.files = files
        self.column_names = pq.ParquetFile(files[0]).schema_arrow.names

    def batches(self, columns: list[str]) -> Iterator[dict[str, list]]:
        import pyarrow.parquet as pq

        for name in self.files:
            reader = pq.ParquetFile(name)
            if missing := [c for c in columns if c not in reader.schema_arrow.names]:
                raise HdiffError(f"{name}: no column {missing[0]!r}, which {self.files[0]} has; available columns: "
                                 f"{', '.join(reader.schema_arrow.names)}")
            for batch in reader.iter_batches(batch_size=READ_BATCH, columns=columns):
                yield batch.to_pydict()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def open_corpus(path_or_id: str, *, column: str = "prompt", split: str = "train", revision: str | None = None,
                name: str | None = None, data_files: str | list[str] | None = None, streaming: bool = False,
                keep_columns: list[str] | str = ()) -> Corpus:
    """The source's rows, ready to read: local files, or a Hub dataset resolved to one commit's files."""
    dataset = hub_dataset(path_or_id, revision=revision, name=name, split=split, data_files=data_files)
    if dataset is None:
        files = local_files(path_or_id)
        found_revision = hub.files_fingerprint(files)
    else:
        found_revision, files = resolve_hub_files(dataset)
    builder = builder_for(path_or_id, files)
    column = TEXT_COLUMN if builder == "text" else column
    loaded = _load(path_or_id, builder, files, streaming)
    names = loaded.column_names or list(next(iter(loaded)).keys())
    if column not in names:
        raise HdiffError(f"{path_or_id}: no column {column!r}; available columns: {', '.join(names)}")
    keep = [n for n in names if n != column] if keep_columns == "all" else list(keep_columns)
    if unknown := [n for n in keep if n not in names]:
        raise HdiffError(f"{path_or_id}: source.keep_columns names {', '.join(map(repr, unknown))}, not in it; "
                         f"available columns: {', '.join(names)}")
    return Corpus(loaded, column, keep, found_revision, hub.portable_name(path_or_id), files)


def _load(source: str, builder: str, files: list[str], streaming: bool):
    import datasets

    try:
        if streaming and builder == "parquet":
            return ParquetStream(files)
        return datasets.load_dataset(builder, data_files=files, split="train", streaming=streaming)
    except Exception as exc:  # a parse error deep inside pyarrow/pandas: one line for the user, naming the place
        where = first_text_problem(files) if builder in ("json", "text") else None
        raise HdiffError(where or f"{source}: could not read it as {builder}: {_first_line(exc)}") from None


def read_corpus(source: str, *, split: str = "train", column: str = "prompt",
                data_files: str | list[str] | None = None) -> list:
    """The raw values of `column` in a source (a Hub dataset's `split`, optional `data_files`; or local files)."""
    return [value for value, _ in open_corpus(source, column=column, split=split, data_files=data_files).rows()]


def missing_source_command(path_or_id: str, **hub_settings) -> str | None:
    """Before any work: a local source must exist; offline, the command that fetches what the cache lacks of a Hub
    source (None when nothing is missing)."""
    dataset = hub_dataset(path_or_id, **hub_settings)
    if dataset is None or not hub.offline():
        return None
    try:
        _cached_files(dataset)
    except hub.NotCached as exc:
        return exc.command
    return None


def check_inputs(config) -> None:
    """Before any work, for a build config: the model and the corpus can be found; offline, one line names the
    command that fetches everything the cache lacks of both."""
    from hdiff.models.loading import adapter_name_for, missing_model_commands

    model = config.model
    if not hub.offline():
        adapter_name_for(model.id)
    commands = missing_model_commands(model.id, allow_pickle=model.allow_pickle, **model.adapter_options())
    if command := config.source.missing_offline():
        commands.append(command)
    if commands:
        raise hub.offline_error(f"the model or the corpus of {config.name} is", commands)


def build_provenance(config, source_revision: str | None) -> dict:
    """The manifest's provenance: the corpus (id, subset, split, revision) and each model with its revision."""
    from hdiff.models.loading import model_provenance

    source = config.source
    hub_source = hub_dataset(source.path_or_id, revision=source.revision, name=source.name, split=source.split,
                             data_files=source.data_files)
    corpus = {"dataset": hub_source.repo_id if hub_source else hub.portable_name(source.path_or_id),
              "hub": hub_source is not None, "name": source.name, "split": source.split if hub_source else None,
              "revision": source_revision}
    return {"source": corpus, **model_provenance(config.model.id, **config.model.adapter_options())}
