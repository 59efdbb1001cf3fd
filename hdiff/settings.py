"""How prompts become images: the generation settings, declared once.

`GenerationSettings` is the one declaration. The build config embeds it as its `generation` section, the
`hdiff generate` command line makes one flag per field from it (its help is the field's description), and
`generate` and the sampler take it. Fields left unset (steps, guidance, size, τ, node condition) are the model's own:
`for_model` fills them from the adapter, where each model family keeps its defaults in one place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hdiff.errors import HdiffError
from hdiff.planning.schedule import SCHEDULE_CURVES
from hdiff.records import NodeCondition, NoiseDevice
from hdiff.validation import format_validation_error

ScheduleName = Literal[tuple(SCHEDULE_CURVES)]  # the registry's names: one list of choices


class GenerationSettings(BaseModel):
    """Everything `generate` needs beyond the model and the prompts, checked when made (before any model loads).

    Types are strict: a bool or a string is never read as a number. Invalid values raise HdiffError, one line per
    problem. At most one of tau and budget is set; neither means the model's own τ (`Adapter.default_tau`: τ's scale
    is the model's cluster features').
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    steps: int | None = Field(None, ge=1, description="denoising steps (default: the model's own)")
    guidance_scale: float | None = Field(None, ge=0, description="classifier-free guidance scale (default: the "
                                         "model's own)")
    height: int | None = Field(None, ge=8, multiple_of=8, description="image height in pixels, a multiple of 8 "
                               "(default: the model's own)")
    width: int | None = Field(None, ge=8, multiple_of=8, description="image width in pixels, a multiple of 8 "
                              "(default: the model's own)")
    tau: float | None = Field(None, ge=0, description="τ, the first cut height of the cluster tree; 0 is standard "
                              "sampling (default: the model's own; its cluster features set the scale)")
    budget: float | None = Field(None, ge=0, lt=1, description="instead of tau: the fraction of UNet rows to save, "
                                 "in [0, 1); τ is chosen to meet it")
    schedule: ScheduleName = Field("linear", description="how the cut height falls from τ to 0 over the steps")
    seed: int = Field(0, ge=0, description="base seed: image i of a prompt gets a seed from (prompt, i, seed)")
    images_per_prompt: int = Field(1, ge=1, description="images made of each prompt")
    copy_max_shared: float = Field(0.25, ge=0, le=1, description="the most steps that copies of one prompt may "
                                   "share, as a fraction of all steps")
    max_batch: int = Field(64, ge=1, description="the most clusters in one denoiser call")
    batch_multiple: int = Field(1, ge=1, description="pad denoiser micro-batches to a multiple of this many "
                                "clusters (8 on GPUs: kernels are reused; padding rows are not counted as compute)")
    noise_device: NoiseDevice = Field("cpu", description="where sampling noise is drawn: 'cpu' (the same images on "
                                      "every machine) or 'device' (the model's device: no host work)")
    node_condition: NodeCondition | None = Field(None, description="a shared node's conditioning: its members' "
                                                 "'mean' or its 'medoid' member's (default: the model's own)")
    negative_prompt: str = Field("", description="what the images should not show, as the stock pipeline's "
                                 "negative_prompt (SD 1.x/2.x, SDXL, SD3.5, PixArt-Σ; default: the stock empty one)")

    @classmethod
    def checked(cls, origin: str = "generation settings", **values: Any) -> GenerationSettings:
        """The settings `values` make; HdiffError with one line per invalid field, each naming `origin`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise HdiffError(_grouped(format_validation_error(exc, origin, cls), origin)) from None

    @model_validator(mode="after")
    def _tau_or_budget(self) -> GenerationSettings:
        if self.tau is not None and self.budget is not None:
            raise ValueError("give at most one of tau and budget")
        return self

    def for_model(self, adapter) -> GenerationSettings:
        """These settings with the unset steps, guidance, size, τ and node condition taken from the adapter's
        defaults (hdiff.models.base.Adapter: one place per model family). τ stays unset under a budget."""
        filled = {"steps": adapter.default_steps, "guidance_scale": adapter.default_guidance,
                  "height": adapter.default_size, "width": adapter.default_size,
                  "node_condition": adapter.default_node_condition}
        if self.budget is None:
            filled["tau"] = adapter.default_tau
        return self.model_copy(update={name: value for name, value in filled.items() if getattr(self, name) is None})


FLAG_ALIASES = {"guidance_scale": ("--guidance",)}  # shorter spellings the command line has always taken


def add_flags(parser) -> None:
    """One `--flag` per field of GenerationSettings, its help the field's description; a flag left out stays
    unset, so the field keeps its default (`from_flags`)."""
    for name, info in GenerationSettings.model_fields.items():
        kind, choices = _flag_type(info.annotation)
        default = "" if info.default is None else f" (default: {info.default})"
        help_text = info.description if info.default is None or "default:" in info.description else \
            f"{info.description}{default}"
        parser.add_argument(f"--{name.replace('_', '-')}", *FLAG_ALIASES.get(name, ()), dest=name, type=kind,
                            choices=choices, default=None, help=help_text)


def from_flags(args, **given: Any) -> GenerationSettings:
    """The settings the flags (`add_flags`) set, `given` values for fields whose flag was not given, the rest
    their defaults."""
    values = {name: getattr(args, name) for name in GenerationSettings.model_fields
              if getattr(args, name, None) is not None}
    values = {**{k: v for k, v in given.items() if v is not None}, **values}
    try:
        return GenerationSettings(**values)
    except ValidationError as exc:  # one line per problem, naming the flag: "--tau: must be >= 0, got -1"
        raise HdiffError(_grouped(format_validation_error(exc, "", GenerationSettings), "", flags=True)) from None


def _grouped(lines: str, origin: str, flags: bool = False) -> str:
    """`origin: field: problem` lines with fields that share a problem joined, so a size given once is refused
    once ("height and width: must be a multiple of 8, got 30"); `flags` names them as command-line flags."""
    problems: dict[str, list[str]] = {}
    for line in lines.splitlines():
        field, _, problem = line.removeprefix(f"{origin}: ").partition(": ")
        if flags and field in GenerationSettings.model_fields:
            field = f"--{field.replace('_', '-')}"
        problems.setdefault(problem, []).append(field)
    prefix = f"{origin}: " if origin else ""
    return "\n".join(f"{prefix}{' and '.join(fields)}: {problem}" for problem, fields in problems.items())


def _flag_type(annotation) -> tuple[type, tuple | None]:
    """(argparse type, choices) of a field's annotation: `int | None` → int; a Literal (or `Literal | None`) → str
    with its values as the choices."""
    if getattr(annotation, "__origin__", None) is Literal:
        return str, annotation.__args__
    options = [a for a in annotation.__args__ if a is not type(None)] if hasattr(annotation, "__args__") \
        else [annotation]
    if len(options) == 1 and getattr(options[0], "__origin__", None) is Literal:
        return str, options[0].__args__
    return options[0], None
