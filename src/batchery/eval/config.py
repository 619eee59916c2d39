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
    judge_prompt: judge.j2           # optional: your own judge prompt(s), here or per judge (see below)
    compare_prompt: [builtin, compare.j2]  # optional: your own pairwise prompt(s), here or per judge
    human_labels: labels.jsonl       # optional: {"id": <item id from items.jsonl>, "label": true|false or 1-5}
    emulate: true                    # optional: run on the in-process emulator (no keys, no cost)
    parquet: true                    # optional: items, pairs and tables also as Parquet (batchery[parquet])
    behaviour: {quality: {...}}      # optional: the emulator's synthetic knobs (see emulator.fake_model)

``inputs`` may instead be written by a model, per statement, in rounds (SpecEval's autobencher)::

    inputs: {generate: {provider: openai, model: gpt-4o, per_statement: 5, rounds: 2}}

Each round asks the model for ``per_statement`` inputs per statement (from its text and examples);
from the second round on it is shown the previous round's inputs that exposed non-compliance or
judge disagreement and asked for more like them. The inputs are written to
``generated_inputs.jsonl`` in the report folder, which can be edited and given as ``inputs:``.

A candidate may be answers made elsewhere instead of a model: ``{name: mine, answers: answers.jsonl}``
with lines ``{"statement_id", "input", "answer"}`` or ``{"id", "answer"}`` (the id of an input line);
they are judged, compared and reported like generated ones, and nothing is generated for them.

``judge_prompt`` / ``compare_prompt`` (at the top level, or per judge, which wins) take one prompt or
a list; each becomes its own stage and its own column. A prompt is ``builtin``, a path to a Jinja2
file, inline template text (a string with a line break, ``{{`` or ``{%``), or a mapping
``{name, file | text, system, output}`` where ``output`` is binary, likert or pairwise (the built-in
schemas) or ``{fields: {name: type}, verdict: name, values: {...}}``.

Relative paths are read from the config file's folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError
from ..inputs import read_file
from ..paths import store_url
from .prompts import BUILTIN, PromptTemplate, builtin_template


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


class CandidateSpec(ModelSpec):
    """A candidate: a model that answers the inputs, or answers made elsewhere (``answers``)."""

    provider: str | None = None  # type: ignore[assignment]
    model: str | None = Field(None, min_length=1)  # type: ignore[assignment]
    answers: Path | None = None  # JSONL of existing answers: nothing is generated for this candidate

    @model_validator(mode="after")
    def _default_name(self) -> CandidateSpec:
        if self.answers is not None:
            given = [f for f in ("provider", "model", "system", "base_url") if getattr(self, f) is not None]
            if given or self.params:
                raise ValueError(f"a candidate with 'answers' is not generated: drop {', '.join(given or ['params'])}")
            if not self.name:
                raise ValueError("a candidate with 'answers' needs a 'name'")
        elif self.provider is None or self.model is None:
            raise ValueError("give 'provider' and 'model' (a model to answer the inputs) or 'answers' "
                             "(a JSONL file of existing answers)")
        elif not self.name:
            self.name = f"{self.provider}/{self.model}"
        return self


class GenerateSpec(ModelSpec):
    """The model that writes test inputs: ``per_statement`` per statement in each of ``rounds``."""

    per_statement: int = Field(ge=1, le=100)
    rounds: int = Field(1, ge=1, le=10)

    @model_validator(mode="after")
    def _no_system(self) -> GenerateSpec:
        if self.system is not None:
            raise ValueError("the input writer's prompt is batchery's own: drop 'system'")
        return self


class GeneratedInputs(BaseModel):
    """``inputs: {generate: {...}}``: the inputs are written by a model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    generate: GenerateSpec


# A file (or folder) of inputs, or a mapping asking for generated ones; the tags name the two in
# pydantic's error locations, which _pydantic_problem drops (the config has no such keys).
_INPUT_TAGS = ("file", "generated")
Inputs = Annotated[Annotated[Path, Tag("file")] | Annotated[GeneratedInputs, Tag("generated")],
                   Discriminator(lambda v: "generated" if isinstance(v, (dict, GeneratedInputs)) else "file")]


class OutputSpec(BaseModel):
    """A prompt's own output: its fields (name -> JSON type or schema) and which one is the verdict."""

    model_config = ConfigDict(extra="forbid")
    fields: dict[str, str | dict[str, Any]] = Field(min_length=1)
    verdict: str
    values: dict[str, bool | int | str] | None = None  # verdict values -> true/false, 1..5, or A/B/tie


class PromptSpec(BaseModel):
    """One judge or pairwise prompt: the built-in one, or a Jinja2 template (a file or inline text)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", pattern=r"^([A-Za-z0-9_]{1,32})?$")  # its stage and column; default the file's stem
    file: Path | None = None
    text: str | None = None
    system: str | None = None  # a system prompt, a template too
    output: str | dict[str, Any] | None = None  # binary | likert | pairwise | {fields, verdict, values}

    @model_validator(mode="after")
    def _one_source(self) -> PromptSpec:
        if self.file is not None and self.text is not None:
            raise ValueError("give 'file' or 'text', not both")
        if self.file is None and self.text is None and self.name not in ("", BUILTIN):
            raise ValueError("give 'file' or 'text' (or the name 'builtin' for the built-in prompt)")
        if self.file is None and self.text is None:
            if self.system is not None or self.output is not None:
                raise ValueError("the built-in prompt takes no 'system' or 'output'")
            self.name = BUILTIN
        elif not self.name:
            if self.file is None:
                raise ValueError("an inline template needs a 'name'")
            self.name = re.sub(r"[^A-Za-z0-9_]", "_", self.file.name.split(".")[0])[:32] or "template"
        return self


def _prompt_list(value: Any) -> Any:
    """One prompt or a list; a string is 'builtin', inline template text (with a line break, '{{' or
    '{%') or a file path."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            if item.strip() == BUILTIN:
                item = {"name": BUILTIN}
            elif "\n" in item or "{{" in item or "{%" in item:
                item = {"name": "custom", "text": item}
            else:
                item = {"file": item}
        out.append(item)
    return out


class JudgeSpec(ModelSpec):
    """A judge, optionally with its own prompts (which replace the evaluation's)."""

    judge_prompt: list[PromptSpec] | None = None
    compare_prompt: list[PromptSpec] | None = None

    _prompts = field_validator("judge_prompt", "compare_prompt", mode="before")(_prompt_list)


class PairwiseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reversed_share: float = Field(1.0, ge=0.0, le=1.0)  # pairs also judged with A and B swapped
    judges: list[str] | None = None  # judge names; default all
    seed: int = 0


class RunSettings(BaseModel):
    """How an evaluation's jobs run: shared by spec evaluations and rankings."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    judges: list[JudgeSpec] = Field(min_length=1)
    compare_prompt: list[PromptSpec] | None = None  # pairwise prompts for every judge without its own
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
    parquet: bool = False  # also write items, pairs and every table as Parquet (needs batchery[parquet])
    _folder: Path = PrivateAttr(default_factory=Path)  # where relative template paths are read from
    _templates: dict = PrivateAttr(default_factory=dict)

    _prompts = field_validator("compare_prompt", mode="before")(_prompt_list)

    def templates(self, judge: JudgeSpec, role: str) -> list[PromptTemplate]:
        """The prompts ``judge`` uses for ``role`` (judge, compare or rank): its own, else the
        evaluation's, else the built-in one; compiled (and checked) once."""
        key = (judge.name, role)
        if key not in self._templates:
            field = "judge_prompt" if role == "judge" else "compare_prompt"
            own = getattr(judge, field)
            index = self.judges.index(judge)
            specs, where = (own, f"judges[{index}].{field}") if own is not None else (getattr(self, field, None), field)
            scale = getattr(self, "scale", "binary")
            self._templates[key] = ([builtin_template(role, scale if role == "judge" else "pairwise")]
                                    if not specs else
                                    [_compile(spec, role, scale, self._folder, f"{where}[{i}]")
                                     for i, spec in enumerate(specs)])
            names = [t.name for t in self._templates[key]]
            if len(set(names)) != len(names):
                raise ConfigError(f"{where}: two prompts share a name; give each a distinct 'name'")
        return self._templates[key]


class EvalConfig(RunSettings):
    spec: Path
    inputs: Inputs
    candidates: list[CandidateSpec] = Field(min_length=1)
    judge_prompt: list[PromptSpec] | None = None  # compliance prompts for every judge without its own
    jury: Literal["mean", "majority", "unanimous"] = "majority"
    scale: Literal["binary", "likert"] = "binary"
    pairwise: PairwiseConfig | None = None
    human_labels: Path | None = None  # calibrates the jury's rates (prediction-powered inference)

    _judge_prompts = field_validator("judge_prompt", mode="before")(_prompt_list)

    @property
    def input_writer(self) -> GenerateSpec | None:
        """The model that writes the inputs, when they are generated (else they are a file)."""
        return self.inputs.generate if isinstance(self.inputs, GeneratedInputs) else None

    @model_validator(mode="after")
    def _unique_names(self) -> EvalConfig:
        _distinct(self.judges, "judge")
        _distinct(self.candidates, "candidate")
        if isinstance(self.inputs, GeneratedInputs):
            if any(c.answers is not None for c in self.candidates):
                raise ValueError("inputs.generate: an 'answers' candidate answers given inputs, not generated ones; "
                                 "generate once, then give generated_inputs.jsonl as inputs")
            if self.human_labels is not None:
                raise ValueError("inputs.generate: human_labels name items of given inputs; generate once, then "
                                 "give generated_inputs.jsonl as inputs")
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
        for i, judge in enumerate(self.judges):
            if judge.judge_prompt is not None:
                raise ValueError(f"judges[{i}].judge_prompt: a ranking only compares; use compare_prompt")
        return self


def _compile(spec: PromptSpec, role: str, scale: str, folder: Path, where: str) -> PromptTemplate:
    """A prompt of the config as a checked template (ConfigError naming the field, file and line)."""
    from .prompts import builtin_output, compile_template, declared_output

    if spec.name == BUILTIN:
        return builtin_template(role, scale if role == "judge" else "pairwise")
    builtin_kinds = ("binary", "likert") if role == "judge" else ("pairwise",)
    output_spec = spec.output
    if output_spec is None:
        output = builtin_output(scale if role == "judge" else "pairwise")
    elif isinstance(output_spec, str):
        if output_spec not in builtin_kinds:
            raise ConfigError(f"{where}.output: must be {' or '.join(builtin_kinds)}, or {{fields, verdict}}; "
                              f"got '{output_spec}'")
        output = builtin_output(output_spec)
    else:
        try:
            declared = OutputSpec.model_validate(output_spec)
            output = declared_output(declared.fields, declared.verdict, declared.values, role)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(f"{where}.output.{_where(tuple(error['loc']))}: {error['msg']}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}.output.{exc}") from None
    if role == "judge" and output.kind != scale:
        raise ConfigError(f"{where}.output: gives {output.kind} verdicts, but the evaluation's scale is {scale}")
    if spec.file is not None:
        path = spec.file if spec.file.is_absolute() else folder / spec.file
        try:
            source = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}.file: no such file {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}.file: {path} cannot be read ({exc})") from None
        return compile_template(spec.name, role, output, source, str(path), system=spec.system)
    assert spec.text is not None
    return compile_template(spec.name, role, output, spec.text, where, system=spec.system, inline=True)


def _distinct(models: Sequence[ModelSpec], role: str) -> None:
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two {role}s share a name; give each a distinct 'name'")


def load_config(path: Path, kind: type[RunSettings] = EvalConfig) -> Any:
    """Read and check an evaluation (or, with kind=RankingConfig, a ranking) config whole, before
    any stage runs: its keys and values, each model's provider and the parameters that provider
    can take, and the files it names. Every problem found is listed in one ConfigError, each line
    naming the file and field (`support.yaml: candidates[1].params.temperatur: ...`)."""
    import yaml

    data = read_file(path, "config file", ConfigError)
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
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
        if isinstance(value, Path) and not value.is_absolute() and not (field == "store" and store_url(value)):
            setattr(config, field, base / value)
    for candidate in getattr(config, "candidates", []):
        if candidate.answers is not None and not candidate.answers.is_absolute():
            candidate.answers = base / candidate.answers
    if config.out is None:  # beside the config, like every path in it: the same from any working directory
        config.out = base / "eval-out" / config.name
    check_folder(config.out, f"{path}: out")
    if config.parquet:  # pyarrow missing: say so now, not after every stage has been paid for
        from ..columnar import pyarrow

        try:
            pyarrow()
        except ConfigError as exc:
            problems.append(f"parquet: {exc}")
    config._folder = base
    for judge in config.judges:  # every template checked now, before anything is sent
        for role in ("judge", "compare") if isinstance(config, EvalConfig) else ("rank",):
            try:
                config.templates(judge, role)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(dict.fromkeys(problems)))
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
    if loc[:1] == ("inputs",) and len(loc) > 1 and loc[1] in _INPUT_TAGS:  # which kind of inputs, not a key
        loc = loc[:1] + loc[2:]
    if error["type"] == "extra_forbidden":  # a key the config does not have: most often a typo
        owner = next((part for part in reversed(loc[:-1]) if isinstance(part, str)), None)
        parents: dict[Any, type[BaseModel]] = {"candidates": CandidateSpec, "judges": JudgeSpec,
                                               "pairwise": PairwiseConfig, "judge_prompt": PromptSpec,
                                               "compare_prompt": PromptSpec, "inputs": GeneratedInputs,
                                               "generate": GenerateSpec}
        parent = parents.get(owner, kind)
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
    entries = [(f"{role}[{i}]", role, model) for role in ("candidates", "judges")
               for i, model in enumerate(_as_list(raw.get(role)))]
    inputs = raw.get("inputs")
    if isinstance(inputs, dict):  # the input writer is checked like the other models
        entries.append(("inputs.generate", "generate", inputs.get("generate")))
    for where, role, model in entries:
        if not isinstance(model, dict):
            continue
        provider, params = model.get("provider"), model.get("params") or {}
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


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


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
    candidates = raw.get("candidates") if "candidates" in kind.model_fields else None
    for i, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        answers = candidate.get("answers") if isinstance(candidate, dict) else None
        if isinstance(answers, str):
            target = Path(answers) if Path(answers).is_absolute() else base / answers
            if not target.is_file():
                problems.append(f"candidates[{i}].answers: no such file {target}")
    return problems
