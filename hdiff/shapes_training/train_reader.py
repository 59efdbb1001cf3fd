"""Train the shapes model's reader: `python -m hdiff.shapes_training.train_reader --model FOLDER [--config JSON]`.

Stages: training prompts (training-split scenes in the six templates, in training phrasings of hdiff.shapes.phrasings
with every attribute named, and with some left unnamed; two-object scenes in the templates) → their all-MiniLM-L6-v2
embeddings → an MLP with one cross-entropy head per output (AdamW, cosine decay; CPU, about a minute) → the
reader's accuracy on evaluation prompts that share neither a phrasing nor an attribute combination with training
→ `reader.safetensors` in the model folder, the words of its training prompts in `reader_words.txt` (what the
runtime mends typing slips to: hdiff.shapes.spelling), and the config and figures in its `hdiff_shapes.json`
(`reader`). The recorded config reproduces the weights bit for bit on CPU: `--config FOLDER/hdiff_shapes.json`;
`--words-only` writes `reader_words.txt` alone, beside a reader trained before the file existed.

How the model then draws these prompts is measured by `python -m hdiff.shapes_training.evaluate_wording`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hdiff.errors import HdiffError, run_as_command
from hdiff.shapes.grammar import NUM_TEMPLATES, describe
from hdiff.shapes.model import METADATA_FILE, SENTENCE_MODEL, WEIGHTS_DIR, load_shapes_metadata
from hdiff.shapes.phrasings import phrase
from hdiff.shapes.reader_sets import Target, evaluation_sets, partial_example
from hdiff.shapes.reader import (
    HEADS,
    ONE,
    TWO,
    UNNAMED,
    Reader,
    pad_tokens,
    read_requests,
    save_reader,
    save_words,
    token_embeddings,
)
from hdiff.shapes.spelling import words_of
from hdiff.shapes.wording import add_noise, free_phrase, free_two_objects
from hdiff.shapes.world import REQUEST_ATTRIBUTES, Request, Scene, all_one_object_scenes, random_scene, split_of



@dataclass(frozen=True)
class ReaderConfig:
    """Everything that determines the reader's weights; recorded in hdiff_shapes.json as `reader.config`."""

    seed: int = 0
    phrasings_per_scene: int = 4  # training phrasings with every attribute named, per training-split scene
    partial_per_scene: int = 3  # training phrasings naming some attributes only
    free_per_scene: int = 6  # free renderings (hdiff.shapes.wording) with every attribute named
    free_partial_per_scene: int = 3  # free renderings naming some attributes only
    noise_share: float = 0.4  # of the phrasings and free renderings, passed through wording.add_noise
    two_object_share: float = 0.1  # two-object prompts (templates and free renderings at even odds), as a share
    hidden: int = 256
    queries: int = 2  # attention weightings per head
    epochs: int = 5
    bucket_batches: int = 50  # batches are cut from length-sorted runs of this many, to pad little
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4

    def __post_init__(self):
        counts = (self.phrasings_per_scene, self.partial_per_scene, self.hidden, self.queries, self.epochs,
                  self.batch_size, self.warmup_steps, self.bucket_batches)
        if (min(counts) < 1 or min(self.free_per_scene, self.free_partial_per_scene) < 0
                or not 0.0 <= self.two_object_share < 1.0 or not 0.0 <= self.noise_share <= 1.0 or not self.lr > 0):
            raise HdiffError("reader config: counts must be positive (free ones ≥ 0), two_object_share in [0, 1), "
                             "noise_share in [0, 1] and lr > 0")


# ---------------------------------------------------------------------------------------------------- data


def training_examples(cfg: ReaderConfig) -> list[tuple[str, Target]]:
    """(prompt, target) pairs of training-split scenes only: the templates, the training phrasings, and free
    renderings in people's words (hdiff.shapes.wording), a share of them with people's noise."""
    rng = np.random.default_rng(cfg.seed)
    scenes = [scene for scene in all_one_object_scenes() if split_of(scene) == "train"]
    examples: list[tuple[str, Target]] = []
    for scene in scenes:
        request = Request.of(scene)
        examples += [(describe(scene, template), scene) for template in range(NUM_TEMPLATES)]
        worded = [(phrase(request, rng), request) for _ in range(cfg.phrasings_per_scene)]
        worded += [partial_example(request, rng) for _ in range(cfg.partial_per_scene)]
        worded += [(free_phrase(request, rng), request) for _ in range(cfg.free_per_scene)]
        worded += [partial_example(request, rng, writer=free_phrase) for _ in range(cfg.free_partial_per_scene)]
        examples += [(_noisy(text, rng, cfg.noise_share), target) for text, target in worded]
    n_two = round(len(examples) * cfg.two_object_share)
    two = [random_scene(rng, "train", n_objects=2) for _ in range(n_two)]
    return examples + [(describe(scene, rng=rng) if rng.random() < 0.5
                        else _noisy(free_two_objects(scene, rng), rng, cfg.noise_share), scene) for scene in two]


def training_words(cfg: ReaderConfig) -> frozenset[str]:
    """The lower-case words of the training prompts as the writers write them, the noise off (no typos): the
    words the runtime mends a prompt's slips to."""
    return frozenset(words_of(text for text, _ in training_examples(dataclasses.replace(cfg, noise_share=0.0))))


def _noisy(text: str, rng: np.random.Generator, share: float) -> str:
    return add_noise(text, rng) if rng.random() < share else text


def labels(targets: list[Target]) -> dict[str, torch.Tensor]:
    """Per head, the (N,) class index of each target: two-object scenes only label `objects`, -100 elsewhere."""
    out = {name: torch.full((len(targets),), -100, dtype=torch.long) for name in HEADS}
    for row, target in enumerate(targets):
        if isinstance(target, Scene) and len(target.objects) == 2:
            out["objects"][row] = HEADS["objects"].index(TWO)
            continue
        named = (target if isinstance(target, Request) else Request.of(target)).named
        out["objects"][row] = HEADS["objects"].index(ONE)
        for name in REQUEST_ATTRIBUTES:
            out[name][row] = HEADS[name].index(named.get(name, UNNAMED))
    return out


def tokens_with_cache(prompts: list[str], cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM token embeddings of `prompts`, rounded to float16 (as the cache stores them, so that a run with a
    cache and one without train the same weights): (N, T, 384) float16 padded and the (N, T) mask. With `cache`
    (.npz) only new prompts are embedded, and the file is rewritten with them."""
    table: dict[str, torch.Tensor] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            rows = np.split(data["tokens"], np.cumsum(data["lengths"])[:-1])
            table = {prompt: torch.from_numpy(row) for prompt, row in zip(data["prompts"].tolist(), rows)}
    missing = list(dict.fromkeys(p for p in prompts if p not in table))
    for lo in range(0, len(missing), 2048):
        chunk = missing[lo:lo + 2048]
        tokens, mask = token_embeddings(chunk, SENTENCE_MODEL)
        table.update((prompt, tokens[i, mask[i]].half()) for i, prompt in enumerate(chunk))
    if missing and cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, prompts=np.asarray(list(table), dtype=str),
                 lengths=np.asarray([len(row) for row in table.values()]),
                 tokens=torch.cat(list(table.values())).numpy())
    tokens, mask = pad_tokens([table[p] for p in prompts])
    return tokens.half(), mask


def train_reader(cfg: ReaderConfig, tokens: torch.Tensor, mask: torch.Tensor, targets: dict[str, torch.Tensor],
                 log=print) -> Reader:
    """Fit the reader on (N, T, D) token embeddings, their (N, T) mask and per-head (N,) labels; deterministic in
    cfg.seed (initial weights from a forked RNG, batches from a seeded generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        reader = Reader(tokens.shape[2], cfg.hidden, cfg.queries)
    real = tokens[mask].float()  # (tokens, D)
    reader.input_mean.copy_(real.mean(dim=0))
    reader.input_scale.copy_(real.std(dim=0).mean())
    optimizer = torch.optim.AdamW(reader.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    n = len(tokens)
    lengths = mask.sum(dim=1)  # (N,)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    for epoch in range(cfg.epochs):
        reader.train()
        batches = length_batches(torch.randperm(n, generator=generator), lengths, cfg, generator)
        epoch_loss = 0.0
        for index, rows in enumerate(batches):
            step = epoch * steps_per_epoch + index
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, cfg)
            length = int(lengths[rows].max())
            logits = reader(tokens[rows, :length], mask[rows, :length])
            loss = sum(torch.nn.functional.cross_entropy(logits[name], targets[name][rows], ignore_index=-100)
                       for name in HEADS if (targets[name][rows] >= 0).any())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        log(f"epoch {epoch + 1}/{cfg.epochs}  loss {epoch_loss / steps_per_epoch:.4f}")
    return reader.eval()


def length_batches(order: torch.Tensor, lengths: torch.Tensor, cfg: ReaderConfig,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """The rows of `order` in batches of cfg.batch_size: each run of cfg.bucket_batches batches is sorted by prompt
    length before it is cut (a batch pads to its longest prompt), and the batches are shuffled."""
    run = cfg.batch_size * cfg.bucket_batches
    batches = []
    for lo in range(0, len(order), run):
        chunk = order[lo:lo + run]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(cfg.batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def learning_rate(step: int, total: int, cfg: ReaderConfig) -> float:
    """Linear warmup over cfg.warmup_steps, then cosine decay to zero at `total`."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total))


def reading_accuracy(reader: Reader, tokens: torch.Tensor, mask: torch.Tensor, targets: list[Target]) -> float:
    """The share of prompts read exactly: a two-object scene as two objects, a one-object target as its Request."""
    read = read_requests(reader, tokens, mask)
    right = [(got is None) if isinstance(t, Scene) and len(t.objects) == 2
             else got == (t if isinstance(t, Request) else Request.of(t)) for got, t in zip(read, targets)]
    return float(np.mean(right))


def run(cfg: ReaderConfig, model_folder: Path, *, cache: Path | None = None, eval_prompts: int = 1000,
        log=print) -> dict:
    """Data → embeddings → training → evaluation → reader.safetensors and `reader` in hdiff_shapes.json."""
    metadata = load_shapes_metadata(model_folder)
    started = time.perf_counter()
    examples = training_examples(cfg)
    sets = evaluation_sets(eval_prompts)
    prompts = [p for p, _ in examples] + [p for pairs in sets.values() for p, _ in pairs]
    tokens, mask = tokens_with_cache(prompts, cache)  # (N_train + N_eval, T, 384), (N_train + N_eval, T)
    embedding_seconds = time.perf_counter() - started
    log(f"{len(examples)} training prompts and {len(prompts) - len(examples)} evaluation prompts embedded in "
        f"{embedding_seconds:.0f} s")
    trained = time.perf_counter()
    n = len(examples)
    reader = train_reader(cfg, tokens[:n], mask[:n], labels([t for _, t in examples]), log=log)
    reader.words = training_words(cfg)
    seconds = time.perf_counter() - trained
    figures, offset = {}, len(examples)
    for name, pairs in sets.items():
        rows = slice(offset, offset + len(pairs))
        figures[name] = reading_accuracy(reader, tokens[rows], mask[rows], [t for _, t in pairs])
        offset += len(pairs)
        log(f"read exactly, {name} (held-out combinations, n={len(pairs)}): {100 * figures[name]:.1f}%")
    save_reader(model_folder, reader)
    metadata["reader"] = {"config": dataclasses.asdict(cfg), "training_prompts": len(examples),
                          "seconds": round(seconds, 1), "embedding_seconds": round(embedding_seconds, 1),
                          "read_exactly": figures, "evaluation_prompts": eval_prompts,
                          "command": "python -m hdiff.shapes_training.train_reader --model FOLDER --config "
                                     "FOLDER/hdiff_shapes.json"}
    write_metadata(model_folder, metadata)
    return metadata["reader"]


def write_metadata(folder: Path, metadata: dict) -> None:
    from hdiff.files import write_atomically

    write_atomically(folder / METADATA_FILE, (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode())


def config_from(path: Path | None) -> ReaderConfig:
    """A recorded config (hdiff_shapes.json's `reader.config`, or the bare config JSON), else the defaults."""
    if path is None:
        return ReaderConfig()
    recorded = json.loads(path.read_text())
    values = recorded.get("reader", {}).get("config", recorded) if "reader" in recorded else recorded
    unknown = set(values) - {f.name for f in dataclasses.fields(ReaderConfig)}
    if unknown:
        raise HdiffError(f"{path}: unknown reader config fields {sorted(unknown)}")
    return ReaderConfig(**values)


def main(argv: list[str] | None = None) -> int:
    from hdiff.errors import CommandParser

    parser = CommandParser(prog="python -m hdiff.shapes_training.train_reader", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=WEIGHTS_DIR,
                        help="the shapes model folder the reader is written into (default: the shipped one)")
    parser.add_argument("--config", type=Path, help="hdiff_shapes.json (or a reader config JSON) to reproduce")
    parser.add_argument("--cache", type=Path, help=".npz of prompt token embeddings, reused and extended")
    parser.add_argument("--eval-prompts", type=int, default=1000, help="prompts per evaluation set")
    parser.add_argument("--words-only", action="store_true",
                        help="write reader_words.txt (the training prompts' words, from --config) and train nothing")
    args = parser.parse_args(argv)

    def body() -> None:
        if not (args.model / "unet").is_dir():
            raise HdiffError(f"{args.model} is not a shapes model folder (no unet/)")
        cfg = config_from(args.config)
        if args.words_only:
            words = training_words(cfg)
            save_words(args.model, words)
            print(f"{len(words)} training words written to {args.model / 'reader_words.txt'}")
            return
        run(cfg, args.model, cache=args.cache, eval_prompts=args.eval_prompts,
            log=lambda message: print(message, flush=True))

    return run_as_command(body)


if __name__ == "__main__":
    sys.exit(main())
