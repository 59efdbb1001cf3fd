"""The embedded default model: a small pixel-space UNet of the shapes world (hdiff.shapes), shipped in the package.

It is conditioned like Kandinsky 2.2's decoder, on one vector: an all-MiniLM-L6-v2 sentence embedding — of the scene
its reader reads in the prompt, in the words the decoder was trained on (hdiff.shapes.reader, Kandinsky's prior in
this world), or of the prompt itself for a model without a reader. The unconditional row is the zero vector (the
trainer drops embeddings to zero for classifier-free guidance).
Prompts are clustered by the model's layout prior (hdiff.shapes.prior), as Kandinsky's by its prior's image embeds.
"""

from __future__ import annotations

import json

import torch

from hdiff.embedding import embed_texts
from hdiff.errors import HdiffError
from hdiff.models.base import Adapter, Conditioning, default_dtype, load_component, register
from hdiff.models.image_embeds import guided_with_learned_variance, image_embeds_forward
from hdiff.models.schedulers import make_scheduler
from hdiff.shapes.model import (METADATA_FILE, SENTENCE_MODEL, SHAPES_MODEL_ID, apply_whitening, load_whitening,
                                model_folder)
from hdiff.shapes.prior import load_prior, prior_features
from hdiff.shapes.reader import canonical_prompts, load_reader
from hdiff.shapes.wording import warn_not_understood

CLUSTER_FEATURES = ("prior", "embedding")


@register
class ShapesAdapter(Adapter):
    name = "shapes"
    pipeline_classes = ("HdiffShapesPipeline",)
    options = ("cluster_on",)

    def __init__(self, model_id: str, unet, scheduler, info: dict, *, device="cpu", dtype=torch.float32,
                 cluster_on: str | None = None):
        super().__init__(model_id, scheduler, device, dtype)
        prior = info.get("prior")
        if cluster_on is None:  # the prior where the model has one (models trained before it: their vectors)
            cluster_on = "prior" if prior is not None else "embedding"
        check_cluster_on(cluster_on)
        if cluster_on == "prior" and prior is None:
            raise HdiffError(f"{model_id} has no layout prior to cluster on: add one with "
                             "`python -m hdiff.shapes_training.add_prior FOLDER`, or cluster on the embedding")
        self.unet = unet
        self.info = info
        self.sentence_model = info.get("sentence_model", SENTENCE_MODEL)
        self.default_steps = int(info.get("default_steps", 25))
        self.default_guidance = float(info.get("default_guidance_scale", 4.0))
        self.default_size = int(info.get("image_size", 32))
        self.cluster_on = cluster_on
        if cluster_on == "prior":
            self.default_tau = prior["default_tau"]  # τ on the prior's scale, stored with it

    @classmethod
    def from_pretrained(cls, source: str = SHAPES_MODEL_ID, *, device: str = "cpu", dtype=None,
                        allow_pickle: bool = False, scheduler=None, cluster_on: str | None = None,
                        **options) -> "ShapesAdapter":
        """`scheduler`: a name in hdiff.models.schedulers.SCHEDULERS or a scheduler object (default: the model's
        `default_scheduler`). `cluster_on`: "prior" (the layout prior's features, hdiff.shapes.prior; the default
        where the model has one) or "embedding" (the conditioning vectors themselves)."""
        from diffusers import DDPMScheduler, UNet2DConditionModel

        if options:
            raise HdiffError(f"the shapes model has no option {', '.join(map(repr, sorted(options)))}; it accepts "
                             f"device, dtype, allow_pickle, scheduler, {', '.join(cls.options)}")
        check_cluster_on(cluster_on)
        folder = model_folder(source)
        dtype = dtype or default_dtype(device)
        info_path = folder / METADATA_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        unet = load_component(UNet2DConditionModel, str(folder), "unet", torch_dtype=dtype,
                              allow_pickle=allow_pickle).to(device)
        info["whitening"] = load_whitening(folder)
        info["prior"] = load_prior(folder)
        info["reader"] = load_reader(folder)
        if scheduler is None or isinstance(scheduler, str):  # the training schedule, sampled as named
            base = load_component(DDPMScheduler, str(folder), "scheduler")
            scheduler = make_scheduler(scheduler or info.get("default_scheduler", "ddpm"), base.config)
        return cls(source, unet, scheduler, info, device=device, dtype=dtype, cluster_on=cluster_on)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    def encode(self, prompts, generators) -> Conditioning:
        """The UNet's conditioning vectors: of the scene the reader reads in each prompt where the model has a
        reader (hdiff.shapes.reader), else of the prompt itself; clustered by the layout prior's features where
        the model has one."""
        warn_not_understood(prompts)
        vectors = torch.from_numpy(embed_texts(list(prompts), self.sentence_model))  # (N, 384), unit length
        if self.info.get("reader") is not None:
            vectors = self.read(list(prompts), vectors, generators)
        cond = apply_whitening(self.info.get("whitening"), vectors)  # (N, 384)
        features = prior_features(self.info["prior"], cond) if self.cluster_on == "prior" else cond  # (N, ΣK | 384)
        return Conditioning({"image_embeds": cond.to(self.device, self.dtype)}, features.numpy())

    def read(self, prompts: list[str], vectors: torch.Tensor, generators) -> torch.Tensor:
        """(N, 384) prompt embeddings → the embeddings of the words the decoder knows for what each prompt asks."""
        canonical = canonical_prompts(self.info["reader"], prompts, self.sentence_model, generators)
        rows = [row for row, text in enumerate(canonical) if text is not None]
        if rows:
            vectors = vectors.clone()
            vectors[rows] = torch.from_numpy(embed_texts([canonical[row] for row in rows], self.sentence_model))
        return vectors

    def negative(self, negative_prompt=""):
        return {"image_embeds": torch.zeros(1, self.unet.config.encoder_hid_dim, device=self.device,
                                            dtype=self.dtype)}

    def latent_shape(self, height, width):
        return (self.unet.config.in_channels, height, width)

    @torch.no_grad()
    def forward(self, latent_input, t, rows, guidance_scale):
        return image_embeds_forward(self.unet, latent_input, t, rows["image_embeds"])

    def model_output(self, output, scheduler, guided, guidance_scale, channels):
        return guided_with_learned_variance(output, scheduler, guided, guidance_scale, channels)

    @torch.no_grad()
    def decode(self, latents):
        return (latents * 0.5 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float()


def check_cluster_on(cluster_on: str | None) -> None:
    if cluster_on is not None and cluster_on not in CLUSTER_FEATURES:
        raise HdiffError(f"cluster_on must be one of {', '.join(CLUSTER_FEATURES)}, got {cluster_on!r}")
