"""The rft_cycle trigger form: every field of CycleParams with the model's type, bounds, choices and default,
sections, a description for every field, optional fields not required, internal fields hidden yet accepted from
conf, the reward's suggestions, and the defaults the JSON fields override shown (and true)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import pytest
import yaml
from airflow.sdk.definitions.param import ParamsDict, process_params

from rftflow.cli import demo
from rftflow.cycle import params as params_module
from rftflow.cycle.params import (
    BUILTIN_REWARDS,
    CLEARABLE,
    DEFAULTS,
    ESTIMATES,
    FORM,
    GUARD_DEFAULTS_SHOWN,
    INTERNAL,
    PROJECT_ROOT,
    RECIPE_DEFAULTS_SHOWN,
    SCHEMA_KEYS,
    SECTIONS,
    CycleParams,
    build_params,
    default_artifact_root,
    parse_params,
)

OPTIONAL = {"sft_uri", "recipe_overrides", "protected_slices", "guards", "artifact_root", "notify"}


@pytest.fixture(scope="module")
def form():
    return build_params()


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["rft_cycle"]


def _required_in_the_ui(schema: dict) -> bool:
    # Airflow 3's trigger form marks a field required when it is typed and its type does not admit null.
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_every_field_sits_in_a_known_section_in_the_issue_order(form):
    sections = [p.schema.get("section") for p in form.values()]
    assert set(sections) == set(SECTIONS), "every field has a section, and every section has fields"
    first_seen = list(dict.fromkeys(sections))  # the UI orders sections by their first field
    assert first_seen == list(SECTIONS)
    assert SECTIONS == ("Data", "Model", "Training", "Gate", "Operations", "Advanced")
    gate = {k for k, p in form.items() if p.schema["section"] == "Gate"}
    assert {"gate_confidence", "on_missing_evidence", "protected_slices", "guards"} <= gate


def _description(param) -> str:
    # What the form shows under a field: `description`, else the Markdown `description_md`.
    return param.description if param.description is not None else param.schema.get("description_md") or ""


def test_every_field_has_a_title_and_a_description(form):
    for name, param in form.items():
        assert param.schema.get("title"), name
        assert len(_description(param)) >= 30, f"{name}: {_description(param)!r}"
        assert param.description is None or "`" not in param.description, f"{name}: Markdown in plain text"


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}
_BOUNDS = {at.Ge: ("minimum", "ge"), at.Le: ("maximum", "le"), at.Gt: ("exclusiveMinimum", "gt"),
           at.Lt: ("exclusiveMaximum", "lt"), at.MinLen: ("minLength", "min_length"),
           at.MaxLen: ("maxLength", "max_length")}


def _expected_schema(name: str, field: Any) -> dict[str, Any]:
    """What the form must say of a model field, read from its annotation and Field() metadata."""
    annotation, nullable = field.annotation, name in CLEARABLE
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
        nullable = True
    out: dict[str, Any] = {}
    if get_origin(annotation) is Literal:
        out["enum"] = [*get_args(annotation), *([None] if nullable else [])]
        kind = _JSON_TYPES[type(get_args(annotation)[0])]
    else:
        kind = _JSON_TYPES[get_origin(annotation) or annotation]
    out["type"] = [kind, "null"] if nullable else kind
    for meta in field.metadata:
        if type(meta) in _BOUNDS:
            key, attr = _BOUNDS[type(meta)]
            out[key] = getattr(meta, attr)
        elif getattr(meta, "pattern", None):
            out["pattern"] = meta.pattern
    return out


def test_every_model_field_is_in_the_form_with_the_models_type_bounds_choices_and_default(form):
    """The form is derived from CycleParams: a new field or bound on the model shows here with no second edit."""
    for name, field in CycleParams.model_fields.items():
        if name in INTERNAL:
            continue
        assert name in form, f"{name} is a CycleParams field missing from the trigger form"
        schema = form[name].schema
        shown = {k: v for k, v in schema.items() if k in SCHEMA_KEYS and k != "items"}
        assert shown == _expected_schema(name, field), name
        default = default_artifact_root() if name == "artifact_root" else DEFAULTS[name]
        assert form[name].value == default, name
    assert form["protected_slices"].schema["items"] == form["notify"].schema["items"] == {"type": "string"}


def test_the_form_table_holds_words_only_and_a_new_bound_reaches_the_form(monkeypatch):
    for name, shown in FORM.items():
        assert not set(shown) & set(SCHEMA_KEYS), f"{name}: types and bounds come from CycleParams"
    from pydantic import Field

    class Tighter(CycleParams):
        max_cycles: int = Field(1, ge=1, le=5)
        sft_uri: str | None = Field("include/data/tiny/sft.jsonl", min_length=3)
        training_method: Literal["auto", "lora"] = "auto"

    monkeypatch.setattr(params_module, "CycleParams", Tighter)
    tighter = build_params()
    assert tighter["max_cycles"].schema["maximum"] == 5
    assert tighter["sft_uri"].schema["type"] == ["string", "null"] and tighter["sft_uri"].schema["minLength"] == 3
    assert tighter["training_method"].schema["enum"] == ["auto", "lora"]


def test_internal_fields_are_not_in_the_form(form, dag):
    assert set(INTERNAL) == {"cycle", "parent_run_id"}
    assert not set(INTERNAL) & set(form)
    assert not set(INTERNAL) & set(dag.params)
    assert set(form) | set(INTERNAL) == set(DEFAULTS)


def test_internal_fields_are_still_accepted_from_conf(dag):
    """What the iterate branch sends reaches the tasks' params (Airflow adds undeclared conf keys)."""
    task = dag.get_task("validate_data")
    params = process_params(dag, task, {"cycle": 3, "parent_run_id": "manual__1", "base_model": "tiny"},
                            suppress_exception=False)
    p = parse_params(params)
    assert (p.cycle, p.parent_run_id, p.base_model) == (3, "manual__1", "tiny")
    fresh = parse_params(process_params(dag, task, {}, suppress_exception=False))
    assert (fresh.cycle, fresh.parent_run_id) == (1, None)
    with pytest.raises(ValueError, match="cycle"):
        parse_params(process_params(dag, task, {"cycle": 0}, suppress_exception=False))


def test_optional_fields_are_not_required_and_the_rest_have_defaults(form):
    optional = {k for k, p in form.items() if not _required_in_the_ui(p.schema)}
    assert optional == OPTIONAL
    for name in set(form) - OPTIONAL:
        assert form[name].value is not None, f"{name} is required, so it needs a default"


def test_cleared_optional_fields_run_with_their_defaults(dag):
    """An optional field emptied in the form arrives as null: it validates, and the cycle uses the default."""
    cleared = dict.fromkeys(OPTIONAL)
    params = ParamsDict({k: v for k, v in dag.params.items()})
    params.update(cleared)
    p = parse_params(params.validate())
    assert p.recipe_overrides == {} and p.guards == {} and p.notify == [] and p.protected_slices == []
    assert p.artifact_root and p.sft_uri is None


def test_defaults_validate_and_match_the_demo(form):
    ParamsDict(form).validate()
    assert DEFAULTS["model_family"] == demo.FAMILY, "a default trigger after `make demo` finds its champion"


def test_reward_is_a_choice_of_the_built_ins_or_free_text(form):
    from rftflow.rewards.runner import builtin_names

    schema = form["reward"].schema
    assert list(schema["examples"]) == builtin_names() == list(BUILTIN_REWARDS)
    assert "enum" not in schema  # a handler path or a Lambda ARN is typed in
    for custom in ("include/rewards/numeric.py", "arn:aws:lambda:us-east-1:123456789012:function:reward"):
        assert form["reward"].resolve(value=custom) == custom
    assert {p.stem for p in (PROJECT_ROOT / "include" / "rewards").glob("*.py")} - {"__init__"} <= set(BUILTIN_REWARDS)


def test_recipe_overrides_shows_the_local_recipe_defaults(form):
    description = _description(form["recipe_overrides"])
    for stage, shown in RECIPE_DEFAULTS_SHOWN.items():
        recipe = yaml.safe_load((PROJECT_ROOT / "include" / "recipes" / "local" / f"{stage}.yaml").read_text())
        for key, value in shown.items():
            assert recipe[key] == value, f"{stage}.{key}: the form says {value}, the recipe {recipe[key]}"
        assert f"- **{stage}**: " in description
    assert "**sft**: max_steps 1600" in description and "**rft**: max_steps 60" in description


def test_guards_shows_the_gate_defaults(form):
    from rftflow.scoring.gate import GateConfig

    fields = GateConfig.model_fields
    for key, value in GUARD_DEFAULTS_SHOWN.items():
        assert fields[key].default == value, f"guards.{key}: the form says {value}, GateConfig {fields[key].default}"
    description = form["guards"].description
    assert "Defaults: margin 0.0" in description and "kl_max 1.0" in description
    assert description.startswith("Any other rftflow.scoring.gate.GateConfig field")  # the gate's own wording kept


def test_backend_field_estimates_time_and_cost_per_backend(form):
    from rftflow.backends.aws.pricing import DEFAULT_PRICES

    description = _description(form["backend"])
    assert set(ESTIMATES) == set(form["backend"].schema["enum"])
    for text in ESTIMATES.values():
        assert text in description
    assert "rftflow.backends.aws.pricing" in description
    # The Bedrock line is priced at the table's placeholder rate.
    rate = DEFAULT_PRICES["bedrock_customization_hour"]["REINFORCEMENT_FINE_TUNING"]
    assert f"${rate:.0f} per job-hour" in ESTIMATES["bedrock"] and f"${6 * rate:.0f}" in ESTIMATES["bedrock"]


def test_demo_fast_settings_are_the_ones_run_fast_uses():
    slow, fast = demo.cycles(False), demo.cycles(True)
    for (_, s), (_, f) in zip(slow, fast, strict=True):
        assert f == {**s, **demo.FAST}


def test_demo_says_where_the_task_logs_are_and_how_to_open_the_ui(tmp_path):
    logs = [demo.DEMO_DIR / "cycle-1.log", demo.DEMO_DIR / "cycle-2.log"]
    text = demo.how_to_see(logs, demo.DEMO_DIR / "airflow", (demo.DEMO_DIR / "artifacts").as_uri())
    assert ".demo/cycle-1.log, .demo/cycle-2.log" in text
    command = text.splitlines()[-1].strip()
    assert command.endswith(" standalone")
    assert f"AIRFLOW_HOME={demo.DEMO_DIR / 'airflow'}" in command
    assert f"RFTFLOW_ARTIFACT_ROOT={(demo.DEMO_DIR / 'artifacts').as_uri()}" in command
    assert f"AIRFLOW__CORE__DAGS_FOLDER={PROJECT_ROOT / 'dags'}" in command
    assert "AIRFLOW__CORE__LOAD_EXAMPLES=False" in command
    assert demo.local_path(Path("/tmp/a b/report.html").as_uri()) == "/tmp/a b/report.html"
    assert demo.local_path("s3://bucket/report.html") == "s3://bucket/report.html"
