"""Pydantic validation errors as hdiff's one-line-per-problem messages: `origin: where: what, got value`."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError


def format_validation_error(exc: ValidationError, origin: str, root: type[BaseModel]) -> str:
    """One line per problem: `configs/x.yaml: generation.tau: must be >= 0, got -1`."""
    return "\n".join(f"{origin}: {line}" for err in exc.errors() for line in _lines(err, root))


def _lines(err: dict, root: type[BaseModel]) -> list[str]:
    """A problem's lines: `where: what`; a whole-config check names its keys itself, a line each."""
    if not err["loc"] and err["type"] == "value_error":
        return _message(err, root).splitlines()
    return [f"{_where(err['loc'])}: {_message(err, root)}"]


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _message(err: dict, root: type[BaseModel]) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        hint = did_you_mean(str(err["loc"][-1]), root)
        return (f"unknown key{f' (did you mean {hint}?)' if hint else ''}; expected one of: "
                f"{', '.join(_section_class(root, err['loc'][:-1]).model_fields)}")
    if kind == "missing":
        return "required"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
              "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {_number(ctx[key])}, got {err['input']!r}"
    if kind == "multiple_of":
        return f"must be a multiple of {_number(ctx['multiple_of'])}, got {err['input']!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {err['input']!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"


# keys a diffusers user would guess -> hdiff's (section.key); a key of another section is found by `did_you_mean`
GUESSES = {"num_inference_steps": "steps", "num_steps": "steps", "guidance": "guidance_scale", "cfg": "guidance_scale",
           "cfg_scale": "guidance_scale", "size": "height", "resolution": "height", "batch_size": "max_batch",
           "torch_dtype": "dtype", "pretrained_model_name_or_path": "id", "model_id": "id", "scheduler_name": "scheduler"}


def did_you_mean(key: str, root: type[BaseModel]) -> str | None:
    """The dotted key of `root`'s sections that an unknown `key` most likely means, e.g. "generation.steps" for
    num_inference_steps, "generation.height" for a height put in the model section; None if there is none."""
    wanted = GUESSES.get(key, key)
    for section, info in root.model_fields.items():
        fields = getattr(info.annotation, "model_fields", {})
        if wanted in fields:
            more = " and generation.width" if key in ("size", "resolution") else ""
            return f"{section}.{wanted}{more}"
    return None


def _number(limit):
    return int(limit) if isinstance(limit, float) and limit.is_integer() else limit


def _section_class(root: type[BaseModel], loc: tuple) -> type[BaseModel]:
    cls = root
    for key in loc:
        cls = cls.model_fields[key].annotation
    return cls
