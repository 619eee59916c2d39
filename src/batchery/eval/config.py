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
    model: str
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
    out: Path | None = None  # report folder; default eval-out/<name>
    store: Path | None = None


class EvalConfig(RunSettings):
    spec: Path
    inputs: Path
    candidates: list[ModelSpec] = Field(min_length=1)
    jury: Literal["mean", "majority", "unanimous"] = "majority"
    scale: Literal["binary", "likert"] = "binary"
    pairwise: PairwiseConfig | None = None

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
    """Read and check an evaluation (or, with kind=RankingConfig, a ranking) config; every problem
    is a ConfigError naming the file and field."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (name, spec, inputs, candidates, judges, ...)")
    try:
        config = kind.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    base = path.parent
    for field in ("spec", "inputs", "items", "out", "store"):
        value = getattr(config, field, None)
        if value is not None and not value.is_absolute():
            setattr(config, field, base / value)
    if config.out is None:
        config.out = Path("eval-out") / config.name
    return config
