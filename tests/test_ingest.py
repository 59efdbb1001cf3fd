"""Ingest and the embedding cache: reading corpora, normalizing, counted drops, dedupe, sampling, caching."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hdiff.dataset.embed_cache import embed_with_cache, model_cache_dir
from hdiff.dataset.ingest import (READ_BATCH, KeptInMemory, Prompt, SpilledToDisk, ingest, ingest_into,
                                  near_duplicate_mask, normalize)
from hdiff.dataset.sources import open_corpus, read_corpus
from hdiff.prompts import prompt_id
from hdiff.errors import HdiffError


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path, monkeypatch):
    """No Hub, and a datasets cache inside the test's folder."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------- bad input

LONG = "a large red circle in the center " * 320  # ~10,000 characters
PERSIAN = "دایره\u200cی قرمز"  # with a zero-width non-joiner between two letters: part of the word
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji built with zero-width joiners


def _jsonl(*prompts, column="prompt"):
    return lambda tmp: write_jsonl(tmp / "corpus.jsonl", [{column: p} for p in prompts])


# (id, make source from tmp_path, column, ingest kwargs, expected: error regex or report fields)
BAD_INPUT = [
    ("missing column", _jsonl("a red circle", column="text"), "prompt", {},
     r"corpus\.jsonl: no column 'prompt'; available columns: text$"),
    ("missing local file", lambda tmp: str(tmp / "nope.jsonl"), "prompt", {}, r"nope\.jsonl: no such file or folder$"),
    ("missing folder path", lambda tmp: str(tmp / "a" / "b" / "prompts"), "prompt", {}, r"no such file or folder$"),
    ("unsupported extension", lambda tmp: str(Path(tmp / "p.xlsx").write_bytes(b"x") and tmp / "p.xlsx"), "prompt",
     {}, r"unsupported file type \.xlsx"),
    ("hub id while offline", lambda tmp: "someone/uncached-prompts", "prompt", {},
     r"dataset someone/uncached-prompts is not in the local Hugging Face cache and the Hub is offline .*"
     r"`hf download someone/uncached-prompts --repo-type dataset --include README.md --include '\*.parquet'"),
    ("malformed JSON line", lambda tmp: str(Path(tmp / "p.jsonl").write_bytes(b'{"prompt": "a"}\n{"prompt": "b"\n')
                                            and tmp / "p.jsonl"), "prompt", {},
     r"p\.jsonl:2: not a JSON object \(Expecting ',' delimiter, column 15\)$"),
    ("JSON line not UTF-8", lambda tmp: str(Path(tmp / "p.jsonl").write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
                                            and tmp / "p.jsonl"), "prompt", {}, r"p\.jsonl:2: not UTF-8 text"),
    ("empty JSON lines file", lambda tmp: str(Path(tmp / "p.jsonl").write_bytes(b"") or tmp / "p.jsonl"), "prompt",
     {}, r"p\.jsonl: holds no prompts$"),
    ("empty text file", lambda tmp: str(Path(tmp / "p.txt").write_bytes(b"") or tmp / "p.txt"), "prompt", {},
     r"p\.txt: holds no prompts$"),
    ("text file not UTF-8", lambda tmp: str(Path(tmp / "p.txt").write_bytes(b"a red circle\n\xfe blue\n")
                                            and tmp / "p.txt"), "prompt", {}, r"p\.txt:2: not UTF-8 text"),
    ("every prompt empty", _jsonl("", "   ", "\u200b\u2060", "\n\t"), "prompt", {},
     r"no usable prompts in .*corpus\.jsonl: 4 empty$"),
    ("empty and non-text", _jsonl("", None, 7), "prompt", {}, r"no usable prompts in .*: 2 not text, 1 empty$"),
    ("mixed types", _jsonl(None, 3, 2.5, True, "a red circle", ["a list"]), "prompt", {},
     {"kept": 1, "dropped": {"not_text": 5}, "texts": ["a red circle"]}),
    ("10,000 characters truncated", _jsonl(LONG, "a blue square"), "prompt", {"max_chars": 1000},
     {"kept": 2, "dropped": {}, "truncated": 1, "lengths": [len(LONG[:1000].rstrip()), 13]}),
    ("10,000 characters dropped", _jsonl(LONG, "a blue square"), "prompt", {"long_policy": "drop"},
     {"kept": 1, "dropped": {"too_long": 1}, "texts": ["a blue square"]}),
    ("emoji, right-to-left, zero-width", _jsonl(f"a red \U0001f534 circle {FAMILY}", PERSIAN, "שלום  עולם",
                                               "a\u200bblue\u200d square\ufeff"), "prompt", {},
     {"kept": 4, "dropped": {},
      "texts": [f"a red \U0001f534 circle {FAMILY}", PERSIAN, "שלום עולם", "ablue square"]}),
    ("duplicates", _jsonl("a red circle", "  a  red\tcircle ", "a red circle\u200b", "A red circle",
                          "cafe\u0301", "café"), "prompt", {},
     {"kept": 3, "dropped": {"duplicate": 3}, "texts": ["a red circle", "A red circle", "café"]}),
]


@pytest.mark.parametrize("make_source, column, kwargs, expected", [case[1:] for case in BAD_INPUT],
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_input_gives_one_line_error_or_counted_drop(tmp_path, make_source, column, kwargs, expected):
    source = make_source(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(HdiffError, match=expected) as info:
            ingest(read_corpus(source, column=column), source=source, **kwargs)
        assert "\n" not in str(info.value)
        return
    prompts, report = ingest(read_corpus(source, column=column), source=source, **kwargs)
    assert report.kept == len(prompts) == expected["kept"]
    assert report.dropped == expected["dropped"]
    assert report.read == report.kept + sum(report.dropped.values())
    assert report.truncated == expected.get("truncated", 0)
    if "texts" in expected:
        assert [p.text for p in prompts] == expected["texts"]
    if "lengths" in expected:
        assert [len(p.text) for p in prompts] == expected["lengths"]


# ---------------------------------------------------------------------------------------------- reading


PROMPTS = ["a small red circle in the top left on a blue background", "دایره قرمز", "a, \"quoted\" prompt 🟦"]


def _write(tmp: Path, fmt: str) -> str:
    if fmt == "jsonl":
        return write_jsonl(tmp / "p.jsonl", [{"prompt": p, "n": i} for i, p in enumerate(PROMPTS)])
    if fmt == "json":
        (tmp / "p.json").write_text(json.dumps([{"prompt": p} for p in PROMPTS]), encoding="utf-8")
        return str(tmp / "p.json")
    if fmt == "csv":
        import csv

        with open(tmp / "p.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["n", "prompt"])
            writer.writerows(enumerate(PROMPTS))
        return str(tmp / "p.csv")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"prompt": PROMPTS, "n": list(range(len(PROMPTS)))}), tmp / "p.parquet")
        return str(tmp / "p.parquet")
    if fmt == "txt":
        (tmp / "p.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
        return str(tmp / "p.txt")
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "txt"])
def test_read_corpus_round_trips_local_formats(tmp_path, fmt):
    assert read_corpus(_write(tmp_path, fmt)) == PROMPTS


def test_read_corpus_reads_folders_and_globs(tmp_path):
    folder = tmp_path / "corpus"
    (folder / ".hidden").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [{"prompt": "first"}])
    write_jsonl(folder / "b.jsonl", [{"prompt": "second"}])
    (folder / ".hidden" / "notes.txt").write_text("not a prompt\n")
    assert read_corpus(str(folder)) == ["first", "second"]
    assert read_corpus(str(folder / "*.jsonl")) == ["first", "second"]
    (folder / "c.txt").write_text("third\n")
    with pytest.raises(HdiffError, match="mixes file types .jsonl, .txt"):
        read_corpus(str(folder))
    with pytest.raises(HdiffError, match="no files match"):
        read_corpus(str(folder / "*.parquet"))


def test_streamed_parquet_reads_what_the_whole_read_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = [{"prompt": f"prompt {i}" if i % 5 else None, "n": i, "tags": [f"t{i}"] if i % 3 else [],
             "score": None if i % 4 == 0 else i / 8} for i in range(30)]
    for part, lo in enumerate(range(0, 30, 10)):  # three files, row groups of four rows
        pq.write_table(pa.Table.from_pylist(rows[lo:lo + 10]), folder / f"part-{part}.parquet", row_group_size=4)
    whole = open_corpus(str(folder), keep_columns="all")
    streamed = open_corpus(str(folder), keep_columns="all", streaming=True)
    assert type(streamed.dataset).__name__ == "ParquetStream"
    assert list(streamed.rows()) == list(whole.rows()) and len(list(whole.rows())) == 30
    assert list(streamed.rows())[7] == ("prompt 7", {"n": 7, "tags": ["t7"], "score": 7 / 8})

    pq.write_table(pa.table({"text": ["a red circle"]}), folder / "part-3.parquet")  # a file without the column
    with pytest.raises(HdiffError, match=r"part-3\.parquet: no column 'prompt', which .*part-0\.parquet has; "
                                         r"available columns: text$"):
        list(open_corpus(str(folder), streaming=True).rows())


def test_read_corpus_reads_the_demo_corpus():
    raw = read_corpus(str(Path(__file__).parents[1] / "data" / "demo_prompts.jsonl"))
    prompts, report = ingest(raw)
    assert len(raw) >= 90 and report.kept == len(raw)


# ---------------------------------------------------------------------------------------------- cleaning


def test_normalize():
    assert normalize("  a\u00a0red\n\ncircle\x00 ") == "a red circle"
    assert normalize("cafe\u0301") == "café"  # NFC
    assert normalize("x\u200by\u2060z\ufeff") == "xyz"
    assert normalize(f"{FAMILY}!") == f"{FAMILY}!"
    assert normalize(PERSIAN) == PERSIAN
    assert normalize("\u200b") == ""
    assert [normalize(v) for v in (None, 3, 2.5, b"bytes")] == [None] * 4


def test_prompt_ids_are_stable_hashes_of_normalized_text():
    expected = hashlib.sha1(b"a red circle").hexdigest()[:16]
    prompts, report = ingest(["a red circle", " a red  circle"])
    assert prompts == [Prompt(expected, "a red circle")] and prompt_id("a red circle") == expected
    assert report.dropped == {"duplicate": 1}


def test_limit_and_seeded_sampling_are_deterministic_and_keep_corpus_order():
    texts = [f"prompt number {i}" for i in range(200)]
    head, report = ingest(texts, limit=10, sample_seed=None)
    assert [p.text for p in head] == texts[:10] and report.dropped == {"sampled_out": 190}
    a, _ = ingest(texts, limit=20, sample_seed=3)
    b, _ = ingest(list(reversed(texts)), limit=20, sample_seed=3)
    c, _ = ingest(texts, limit=20, sample_seed=4)
    assert {p.id for p in a} == {p.id for p in b} != {p.id for p in c}
    assert [texts.index(p.text) for p in a] == sorted(texts.index(p.text) for p in a)
    grown, _ = ingest(texts + [f"another prompt {i}" for i in range(20)], limit=20, sample_seed=3)
    assert len({p.id for p in grown} & {p.id for p in a}) >= 10  # mostly the same sample when the corpus grows


def test_near_dedupe_drops_prompts_close_to_a_kept_one():
    vectors = {"a red circle": [1, 0, 0], "a red disc": [0.99, 0.14, 0], "a blue square": [0, 1, 0],
               "a blue block": [0, 0.995, 0.1], "a green cross": [0, 0, 1]}
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    prompts, report = ingest(list(vectors), near_dedupe=0.95, embed_fn=embed)
    assert [p.text for p in prompts] == ["a red circle", "a blue square", "a green cross"]
    assert report.dropped == {"near_duplicate": 2} and len(calls) == 1


def _corpus_rows(n: int) -> list[tuple[object, dict]]:
    """n rows across several store batches: repeats (near and far apart), empties, non-text, a kept column."""
    values = [f"prompt {i % (n // 3)}" if i % 7 else ("" if i % 2 else None) for i in range(n)]
    return [(value, {"row_tag": f"t{i}", "n": i}) for i, value in enumerate(values)]


@pytest.mark.parametrize("settings", [{}, {"limit": 500, "sample_seed": None}, {"limit": 500, "sample_seed": 7},
                                      {"near_dedupe": 0.999}], ids=["all", "first", "seeded", "near"])
def test_the_disk_store_keeps_exactly_what_the_memory_store_keeps(tmp_path, settings):
    rows = _corpus_rows(3 * READ_BATCH + 11)

    def embed(texts):  # one direction per prompt number mod 50, so near-dedupe keeps 50 prompts
        return np.eye(50, dtype=np.float32)[[int(t.split()[1]) % 50 for t in texts]]

    memory = KeptInMemory()
    expected = ingest_into(memory, iter(rows), embed_fn=embed, **settings)
    with SpilledToDisk(tmp_path / "kept.sqlite") as disk:
        report = ingest_into(disk, iter(rows), embed_fn=embed, **settings)
        assert report == expected and len(disk) == len(memory) == report.kept
        kept = [p for chunk in disk.chunks(size=1000) for p in chunk]
        assert [(p.id, p.text, p.row, p.columns) for p in kept] == \
            [(p.id, p.text, p.row, p.columns) for chunk in memory.chunks() for p in chunk]
        assert list(disk.sorted_ids()) == sorted(p.id for p in kept) == list(memory.sorted_ids())
    assert not (tmp_path / "kept.sqlite").exists()
    assert report.read == len(rows) == report.kept + sum(report.dropped.values())
    assert report.dropped["duplicate"] > 0 and report.dropped["empty"] > 0 and report.dropped["not_text"] > 0


def test_near_duplicate_mask_blockwise_matches_the_greedy_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    x[150:] = x[:150] + 0.05 * rng.standard_normal((150, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.zeros(300, dtype=bool)
    for i in range(300):
        expected[i] = not any(expected[j] and x[i] @ x[j] >= 0.9 for j in range(i))
    assert np.array_equal(near_duplicate_mask(x, 0.9, block=32), expected)
    assert expected[:150].all() and not expected[150:].any()


# ---------------------------------------------------------------------------------------------- embedding cache


class CountingEmbedder:
    """A fake sentence model: a deterministic vector per text, and a record of every text it embedded."""

    def __init__(self, dim: int = 4):
        self.dim = dim
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.array([np.random.default_rng(list(t.encode())).standard_normal(self.dim) for t in texts],
                        dtype=np.float32)


def test_embed_cache_computes_each_text_once(tmp_path):
    embed = CountingEmbedder()
    first = embed_with_cache(["a", "b", "a", "c"], tmp_path, "fake-model", embed_fn=embed)
    assert first.shape == (4, 4) and first.dtype == np.float32 and sorted(embed.seen) == ["a", "b", "c"]
    assert np.array_equal(first[0], first[2])

    embed.seen.clear()
    again = embed_with_cache(["c", "a", "b"], tmp_path, "fake-model", embed_fn=embed)
    assert embed.seen == []  # a re-run computes nothing
    assert np.array_equal(again, first[[3, 0, 1]])

    more = embed_with_cache(["d", "a"], tmp_path, "fake-model", embed_fn=embed)
    assert embed.seen == ["d"] and np.array_equal(more[1], first[0])

    other = CountingEmbedder()
    embed_with_cache(["a"], tmp_path, "another-model", embed_fn=other)
    assert other.seen == ["a"]  # keyed by model as well as text
    folder = model_cache_dir(tmp_path, "fake-model")
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_embed_cache_refuses_a_model_of_another_dimension(tmp_path):
    embed_with_cache(["a"], tmp_path, "m", embed_fn=CountingEmbedder(4))
    with pytest.raises(HdiffError, match="dimension 8, the cache holds 4"):
        embed_with_cache(["b"], tmp_path, "m", embed_fn=CountingEmbedder(8))


def test_embed_cache_with_the_offline_sentence_model(tmp_path):
    vectors = embed_with_cache(["a red circle", "a red disc"], tmp_path, "all-MiniLM-L6-v2", progress=False)
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert float(vectors[0] @ vectors[1]) > 0.5


def test_loading_the_sentence_model_leaves_the_process_and_later_hub_loads_alone(monkeypatch):
    """The packaged sentence model loads with local_files_only: the process's environment is untouched, so a model
    loaded afterwards from a Hub id is still fetched online (it used to be forced offline by HF_HUB_OFFLINE=1)."""
    import os

    from hdiff.embedding import load_sentence_model
    from hdiff.models.base import load_component

    import sentence_transformers  # noqa: F401  (its own import sets KMP_* variables: not hdiff's doing)

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as huggingface_hub reads it on a connected machine
    load_sentence_model.cache_clear()
    before = dict(os.environ)
    assert load_sentence_model().get_sentence_embedding_dimension() == 384
    assert dict(os.environ) == before

    class Recorder:  # a loader standing in for a diffusers class: records how it was asked to load
        calls: list[dict] = []

        @classmethod
        def from_pretrained(cls, source, **kwargs):
            cls.calls.append({"source": source, **kwargs})
            return "loaded"

    assert load_component(Recorder, "someone/model", "unet") == "loaded"
    assert Recorder.calls == [{"source": "someone/model", "subfolder": "unet", "local_files_only": False,
                               "use_safetensors": True}]
