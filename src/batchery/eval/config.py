"""An evaluation described in one YAML file: spec, inputs, candidates, judges, jury rule, mode, budget.

    name: demo
    spec: spec.jsonl                 # JSONL statements
    inputs: inputs.jsonl             # or a folder of {statement_id}.json files
    candidates:
      - {name: small, provider: openai, model: gpt-4o-mini, params: {temperature: 0.7, max_tokens: 400}}
    judges:
      - {provider: anthropic, model: claude-haiku-4-5, params: {temperature: 0}}
    jury: majority                   # mean | majority | unanimous
    scale: binary                    # binary | likert
    mode: batch                      # batch | live (then rpm, tpm, concurrency apply)
    budget_usd: 20                   # stop submitting new work once the projected spend would pass it
    pairwise: {reversed_share: 1.0}  # optional: candidates compared head to head, per input
    human_labels: labels.jsonl       # optional: {"id": <item id from items.jsonl>, "label": true|false or 1-5}
    emulate: true                    # optional: run on the in-process emulator (no keys, no cost)
    behaviour: {quality: {...}}      # optional: the emulator's synthetic knobs (see emulator.fake_model)

Relative paths are read from the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError


class ModelSpec(BaseModel):
    """A model taking part: a candidate answering inputs, or a judge grading answers."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""  # how reports call it; default "provider/model"
    provider: str
    model: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)  # temperature, max_tokens, ... (neutral request fields)
    system: str | None = None  # candidates: a system prompt for every input
    base_url: str | None = None

    @model_validator(mode="after")
    def _default_name(self) -> ModelSpec:
        if not self.name:
            self.name = f"{self.provider}/{self.model}"
        return self


class PairwiseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reversed_share: float = Field(1.0, ge=0.0, le=1.0)  # pairs also judged with A and B swapped
    judges: list[str] | None = None  # judge names; default all
    seed: int = 0


class RunSettings(BaseModel):
    """How an evaluation's jobs run: shared by spec evaluations and rankings."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    judges: list[ModelSpec] = Field(min_length=1)
    mode: Literal["batch", "live"] = "batch"
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    concurrency: int = Field(32, ge=1)
    max_attempts: int = Field(3, ge=1)
    budget_usd: float | None = Field(None, ge=0)
    emulate: bool = False
    behaviour: dict[str, Any] | None = None
    out: Path | None = None  # report folder; default eval-out/<name> beside the config
    store: Path | None = None  # default: the store `batchery run` uses ($BATCHERY_HOME, else per-user)


class EvalConfig(RunSettings):
    spec: Path
    inputs: Path
    candidates: list[ModelSpec] = Field(min_length=1)
    jury: Literal["mean", "majority", "unanimous"] = "majority"
    scale: Literal["binary", "likert"] = "binary"
    pairwise: PairwiseConfig | None = None
    human_labels: Path | None = None  # calibrates the jury's rates (prediction-powered inference)

    @model_validator(mode="after")
    def _unique_names(self) -> EvalConfig:
        _distinct(self.judges, "judge")
        _distinct(self.candidates, "candidate")
        if self.pairwise and self.pairwise.judges:
            unknown = set(self.pairwise.judges) - {j.name for j in self.judges}
            if unknown:
                raise ValueError(f"pairwise.judges names unknown judges: {sorted(unknown)}")
        return self


class RankingConfig(RunSettings):
    """Pairwise ranking of any set of items on a described trait (e.g. writing samples)."""

    items: Path  # JSONL: {"id": ..., "text": ...}
    trait: str = Field(min_length=1)
    comparisons_per_item: int = Field(8, ge=1)  # pairs sampled so each item meets about this many others
    reversed_share: float = Field(0.2, ge=0.0, le=1.0)  # pairs also judged with the two sides swapped
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> RankingConfig:
        _distinct(self.judges, "judge")
        return self


def _distinct(models: list[ModelSpec], role: str) -> None:
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two {role}s share a name; give each a distinct 'name'")


def load_config(path: Path, kind: type[RunSettings] = EvalConfig) -> Any:
    """Read and check an evaluation (or, with kind=RankingConfig, a ranking) config whole, before
    any stage runs: its keys and values, each model's provider and the parameters that provider
    can take, and the files it names. Every problem found is listed in one ConfigError, each line
    naming the file and field (`support.yaml: candidates[1].params.temperatur: ...`)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (name, spec, inputs, candidates, judges, ...)")
    problems: list[str] = []
    config = None
    try:
        config = kind.model_validate(raw)
    except ValidationError as exc:
        problems += [_pydantic_problem(error, kind) for error in exc.errors()]
    problems += _model_problems(raw)
    problems += _file_problems(raw, kind, path.parent)
    if problems:
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(dict.fromkeys(problems)))
    assert config is not None
    base = path.parent
    for field in ("spec", "inputs", "items", "human_labels", "out", "store"):
        value = getattr(config, field, None)
        if value is not None and not value.is_absolute():
            setattr(config, field, base / value)
    if config.out is None:  # beside the config, like every path in it: the same from any working directory
        config.out = base / "eval-out" / config.name
    check_folder(config.out, f"{path}: out")
    return config


def check_folder(folder: Path, what: str) -> None:
    """The report folder (made when the report is written) must not be, or lie under, a file."""
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ConfigError(f"{what}: {existing} is a file, not a folder; give a folder for the report")
            return


def _where(loc: tuple) -> str:
    """A pydantic location as the config reads: ('candidates', 1, 'params') -> candidates[1].params."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top)"


def _suggest(word: str, choices) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _pydantic_problem(error: Any, kind: type[RunSettings]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":  # a key the config does not have: most often a typo
        parent = ModelSpec if loc[0] in ("candidates", "judges") and len(loc) == 3 else (
            PairwiseConfig if loc[0] == "pairwise" else kind)
        return f"{_where(loc)}: unknown key{_suggest(str(loc[-1]), parent.model_fields)}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{_where(loc)}: {message[:1].lower()}{message[1:]}"


def _model_problems(raw: dict) -> list[str]:
    """Each candidate's and judge's provider exists and can take its parameters: checked with the
    provider's own `check` on a sample request, as every input line will be (no key needed)."""
    from ..errors import InputError
    from ..providers import PROVIDERS, check_request
    from ..requests import _PARAMS, parse_request

    owned = {"id", "messages", "prompt", "model", "system", "response_format", "metadata"}  # the prompts' own
    problems = []
    for role in ("candidates", "judges"):
        models = raw.get(role)
        for i, model in enumerate(models if isinstance(models, list) else []):
            if not isinstance(model, dict):
                continue
            where, provider, params = f"{role}[{i}]", model.get("provider"), model.get("params") or {}
            if isinstance(provider, str) and provider not in PROVIDERS:
                problems.append(f"{where}.provider: unknown provider '{provider}'{_suggest(provider, PROVIDERS)}; "
                                f"choose one of: {', '.join(PROVIDERS)}")
                provider = None
            if not isinstance(params, dict):
                continue  # pydantic names it
            bad = False
            for key in params:
                if key in owned:
                    hint = " (use the model's own 'system' field)" if key == "system" and role == "candidates" else ""
                    problems.append(f"{where}.params.{key}: set by batchery's prompts, not a parameter{hint}")
                    bad = True
                elif key not in _PARAMS:
                    problems.append(f"{where}.params.{key}: unknown parameter{_suggest(str(key), _PARAMS)}; "
                                    f"parameters: {', '.join(sorted(_PARAMS.keys() - owned))}")
                    bad = True
            if bad or not isinstance(model.get("model"), str) or not model["model"]:
                continue
            sample = {"prompt": "a sample input", "model": model["model"], **params}
            if role == "candidates" and isinstance(model.get("system"), str):
                sample["system"] = model["system"]
            try:
                _, _, canonical = parse_request(sample, None, "")
            except InputError as exc:  # "field 'temperature' must be between 0 and 2, got 5"
                problems.append(f"{where}.params: {str(exc).removeprefix(': ')}")
                continue
            problem = check_request(provider, canonical) if isinstance(provider, str) else None
            if problem:
                problems.append(f"{where}.params: {problem}")
    return problems


def _file_problems(raw: dict, kind: type[RunSettings], base: Path) -> list[str]:
    """The files the config names exist (inputs may be a folder of per-statement files)."""
    problems = []
    for field, folder_ok in (("spec", False), ("inputs", True), ("items", False)):
        if field not in kind.model_fields or not isinstance(raw.get(field), str):
            continue
        target = Path(raw[field]) if Path(raw[field]).is_absolute() else base / raw[field]
        if not target.exists():
            problems.append(f"{field}: no such file {target}")
        elif target.is_dir() and not folder_ok:
            problems.append(f"{field}: {target} is a folder, not a file")
    return problems
