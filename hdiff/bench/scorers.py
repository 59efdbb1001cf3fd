"""`hdiff bench scorers`: what each scorer costs per image, apart from generation (a build scores on its device).

The scorers (hdiff.scoring) run as a build runs them, on models of real size with random weights built from their
configs here (nothing is downloaded): openai/clip-vit-large-patch14's (CLIP ViT-L/14) for `clip` and for the
embeddings of `aesthetic`, whose MLP has the LAION predictor's widths; CompVis/stable-diffusion-safety-checker's
(a ViT-L/14 vision tower) for `nsfw`. Random weights give the real models' cost, not their scores. Images are
natural-image content (hdiff.bench.natural) at `--px`, resized by the scorers' own processors as in a build.
Offline there is no CLIP vocabulary: prompts are tokenized character by character, which makes the text side's
sequences longer (up to its 77 positions) than a real tokenizer's, so `clip`'s figure is an upper bound.

Each scorer: one warm-up batch, then one timed pass over `--images` images in batches of `--batch` (a build's is 32);
then its image processor alone over the same images, the share of that time the CPU spends preparing pixels.

    hdiff bench scorers                                         # 1024 px, every scorer, GPU if present
    hdiff bench scorers --device cpu --images 16 --batch 8
    hdiff bench scorers --tiny --px 64 --images 2 --batch 2     # the tests' size
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hdiff.bench.common import check_output_file, comma_list, integer, machine_line, markdown_table
from hdiff.bench.natural import natural_images
from hdiff.devices import DEVICE_CHOICES, check_device, check_present, resolve_device
from hdiff.errors import CommandParser, run_as_command
from hdiff.files import write_atomically
from hdiff.machine import cpu_model

PROMPTS = ("a photograph of a red flower in a sunny garden, close up, sharp focus",
           "an old temple on a hill above a river at dusk, wide angle")


@dataclass(frozen=True)
class ClipSize:
    """A CLIP's size: its vision tower, text tower and shared projection."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    patch: int
    image: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int
    vocab: int
    projection: int
    aesthetic_widths: tuple[int, ...]  # the aesthetic MLP's hidden widths


# openai/clip-vit-large-patch14 (config.json), and the LAION aesthetic predictor's MLP (1024, 128, 64, 16)
CLIP_L14 = ClipSize(vision_hidden=1024, vision_layers=24, vision_heads=16, vision_mlp=4096, patch=14, image=224,
                    text_hidden=768, text_layers=12, text_heads=12, text_mlp=3072, vocab=49408, projection=768,
                    aesthetic_widths=(1024, 128, 64, 16))
TINY = ClipSize(vision_hidden=32, vision_layers=2, vision_heads=4, vision_mlp=37, patch=8, image=32, text_hidden=32,
                text_layers=2, text_heads=4, text_mlp=37, vocab=1000, projection=16, aesthetic_widths=(16, 8, 8, 4))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser(prog="hdiff bench scorers", description=__doc__.splitlines()[0])
    p.add_argument("--device", type=check_device, default="auto", help=f"one of {', '.join(DEVICE_CHOICES)}")
    p.add_argument("--px", type=integer(16), default=1024, help="image side, px (default 1024)")
    p.add_argument("--batch", type=integer(1), default=32, help="images per scorer call (default 32, a build's)")
    p.add_argument("--images", type=integer(1), default=64, help="images timed per scorer (default 64)")
    p.add_argument("--scorers", type=comma_list(scorer_name), default=list(BENCHED),
                   help=f"comma-separated, of {', '.join(BENCHED)} (default: all)")
    p.add_argument("--tiny", action="store_true", help="tiny configs instead of the real sizes (CPU tests)")
    p.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = p.parse_args(argv)
    args.device = check_present(args.device)  # before any model is built
    if args.out is not None:
        args.out = check_output_file(args.out, "--out")
    return args


def scorer_name(text: str) -> str:
    if text not in BENCHED:
        raise argparse.ArgumentTypeError(f"unknown scorer {text!r}; choose among {', '.join(BENCHED)}")
    return text


def clip_config(size: ClipSize):
    """A CLIPConfig of `size` (quick GELU and 77 text positions, as OpenAI's CLIPs)."""
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=size.vision_hidden, num_hidden_layers=size.vision_layers,
                              num_attention_heads=size.vision_heads, intermediate_size=size.vision_mlp,
                              patch_size=size.patch, image_size=size.image, projection_dim=size.projection,
                              hidden_act="quick_gelu")
    text = CLIPTextConfig(hidden_size=size.text_hidden, num_hidden_layers=size.text_layers,
                          num_attention_heads=size.text_heads, intermediate_size=size.text_mlp,
                          vocab_size=size.vocab, max_position_embeddings=77,
                          projection_dim=size.projection, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=size.projection)


def image_processor(size: ClipSize):
    """CLIP's preprocessing (shortest edge to the model's side, centre crop, CLIP's mean and std)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size.image}, crop_size={"height": size.image,
                                                                              "width": size.image})


def character_tokenizer():
    """A CLIP tokenizer over single characters (no merges): offline, no real vocabulary is at hand."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def save_clip(folder: Path, size: ClipSize) -> Path:
    """A random-weight CLIP in openai/clip-vit-large-patch14's layout (config, safetensors, tokenizer, processor)."""
    from transformers import CLIPModel, CLIPProcessor

    tokenizer = character_tokenizer()
    config = clip_config(size)
    config.text_config.vocab_size = max(size.vocab, len(tokenizer))
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor(size), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_safety_checker(folder: Path, size: ClipSize) -> Path:
    """A random-weight safety checker in CompVis/stable-diffusion-safety-checker's layout."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    StableDiffusionSafetyChecker(clip_config(size)).eval().save_pretrained(folder)
    image_processor(size).save_pretrained(folder)
    return folder


def save_aesthetic(folder: Path, size: ClipSize) -> Path:
    """The aesthetic MLP with random weights, keyed as the upstream state dict (one model.safetensors)."""
    from safetensors.torch import save_file

    from hdiff.scoring.aesthetic import AestheticMLP

    folder.mkdir(parents=True, exist_ok=True)
    save_file(AestheticMLP(size.projection, size.aesthetic_widths).state_dict(), str(folder / "model.safetensors"))
    return folder


def clip_scorer(size: ClipSize, folder: Path, device: str):
    from hdiff.scoring.clip import ClipScorer

    return ClipScorer(str(save_clip(folder / "clip", size)), device)


def aesthetic_scorer(size: ClipSize, folder: Path, device: str):
    from hdiff.scoring.aesthetic import AestheticScorer

    clip = folder / "clip" if (folder / "clip").is_dir() else save_clip(folder / "clip", size)
    return AestheticScorer(str(save_aesthetic(folder / "aesthetic", size)), device, clip=str(clip))


def nsfw_scorer(size: ClipSize, folder: Path, device: str):
    from hdiff.scoring.nsfw import SafetyScorer

    return SafetyScorer(str(save_safety_checker(folder / "nsfw", size)), device)


@dataclass(frozen=True)
class Benched:
    """A benchmarked scorer: what its random weights stand for, how it is loaded (as a build loads it, from models
    saved under a folder), its torch modules (for the parameter count) and its image processor."""

    model: str
    load: Callable[[ClipSize, Path, str], Any]
    modules: Callable[[Any], list]
    processor: Callable[[Any], Any]


BENCHED = {
    "clip": Benched("CLIP ViT-L/14 config", clip_scorer, lambda scorer: [scorer.net],
                    lambda scorer: scorer.processor),
    "aesthetic": Benched("CLIP ViT-L/14 config + LAION MLP", aesthetic_scorer,
                         lambda scorer: [scorer.clip.net, scorer.mlp], lambda scorer: scorer.clip.processor),
    "nsfw": Benched("safety checker config (ViT-L/14 vision)", nsfw_scorer, lambda scorer: [scorer.checker],
                    lambda scorer: scorer.processor),
}  # the scorers with a model (the oracle is the shapes world's own check)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(scorer, images, prompts, batch: int, device) -> dict:
    """One warm-up batch, then one timed pass over `images` (the scorer set to batches of `batch`): seconds, ms per
    image, images/s."""
    scorer.batch_size = batch
    scorer(images[:batch], prompts[:batch])
    synchronize(device)
    start = time.perf_counter()
    scores = scorer(images, prompts)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ms_per_image": 1000 * seconds / len(images), "images_per_s": len(images) / seconds,
            "images_scored": len(scores)}


def preprocess_ms(processor, images, batch: int) -> float:
    """CPU ms per image of the scorer's image processor alone (resize, crop, normalize), in batches of `batch`."""
    start = time.perf_counter()
    for lo in range(0, len(images), batch):
        processor(images=list(images[lo:lo + batch]), return_tensors="pt")
    return 1000 * (time.perf_counter() - start) / len(images)


def run(args: argparse.Namespace) -> dict:
    import torch

    size = TINY if args.tiny else CLIP_L14
    device = resolve_device(args.device)
    images = natural_images(args.images, args.px)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    result = {"px": args.px, "batch": args.batch, "images": args.images, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
              "sizes": "tiny" if args.tiny else "real", "scorers": {}}
    with tempfile.TemporaryDirectory(prefix="hdiff-bench-scorers-") as folder:
        for name in args.scorers:
            benched = BENCHED[name]
            start = time.perf_counter()
            scorer = benched.load(size, Path(folder), str(device))
            loaded = time.perf_counter() - start
            result["scorers"][name] = {
                "model": f"random weights, {'tiny config' if args.tiny else benched.model}",
                "parameters": sum(p.numel() for module in benched.modules(scorer) for p in module.parameters()),
                "load_s": loaded, **measure(scorer, images, prompts, args.batch, device),
                "preprocess_ms_per_image": preprocess_ms(benched.processor(scorer), images, args.batch)}
            del scorer  # its memory, before the next one loads
    result["machine"] = machine_line()  # its load average: over the last minute of the measurements
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    result = run(args)
    rows = [[name, figures["model"], f"{figures['parameters'] / 1e6:,.1f} M", result["device"], f"{args.batch}",
             f"{figures['ms_per_image']:.1f}", f"{figures['images_per_s']:.2f}",
             f"{figures['preprocess_ms_per_image']:.1f}"] for name, figures in result["scorers"].items()]
    print(f"hdiff bench scorers: {args.images} natural images at {args.px} px, {result['sizes']} sizes, on "
          f"{result['device']} ({result['device_name']})")
    print(markdown_table(["scorer", "model", "parameters", "device", "batch", "ms / image", "images / s",
                          "of which preprocessing, ms / image (CPU)"], rows))
    print(result["machine"])
    if args.out is not None:
        write_atomically(args.out, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(run_as_command(main))
