"""Submit forms made from a kind's params JSON schema (pydantic's), and the form's values read
back into params. Strings, numbers, booleans and enums get their own inputs; anything else
(lists, objects) is a JSON text area. No kind is special-cased."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class FormField:
    name: str
    widget: str  # text | textarea | number | select | bool | json
    required: bool
    default: Any
    description: str
    options: list[str]
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"

    @property
    def default_text(self) -> str:
        if self.default is None:
            return ""
        if self.widget == "json":
            return json.dumps(self.default)
        return str(self.default).lower() if isinstance(self.default, bool) else str(self.default)


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return {**defs.get(prop["$ref"].rsplit("/", 1)[-1], {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    fields = []
    for name, raw in schema.get("properties", {}).items():
        prop = _resolve(raw, defs)
        options = [_resolve(o, defs) for o in prop.get("anyOf", [])]
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:  # Optional[X]
            prop = {**non_null[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
        kind = prop.get("type")
        enum = prop.get("enum")
        if enum is None and non_null and all("const" in o for o in non_null):
            enum = [o["const"] for o in non_null]
        if enum is not None:
            widget = "select"
        elif kind == "boolean":
            widget = "bool"
        elif kind in ("integer", "number"):
            widget = "number"
        elif kind == "string":
            widget = "text" if name.endswith(("_id", "model")) or prop.get("maxLength", 10_000) <= 200 else "textarea"
        else:
            widget = "json"
        fields.append(FormField(
            name=name, widget=widget, required=name in required, default=prop.get("default"),
            description=prop.get("description") or prop.get("title") or "",
            options=[str(e) for e in enum or []],
            minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
            maximum=prop.get("maximum", prop.get("exclusiveMaximum")),
            step="1" if kind == "integer" else "any",
        ))
    return fields


def read_params(fields: list[FormField], form: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Params from the submitted values (empty: left out, so the kind's default applies), and
    the values that could not be read."""
    params: dict[str, Any] = {}
    errors: list[str] = []
    for f in fields:
        raw = (form.get(f"p.{f.name}") or "").strip()
        if raw == "":
            continue
        try:
            if f.widget == "bool":
                params[f.name] = raw == "true"
            elif f.widget == "number":
                params[f.name] = int(raw) if f.step == "1" else float(raw)
            elif f.widget == "json":
                params[f.name] = json.loads(raw)
            elif f.widget == "select":
                params[f.name] = next((o for o in f.options if o == raw), raw)
                if raw.lstrip("-").isdigit() and raw not in f.options:
                    params[f.name] = int(raw)
            else:
                params[f.name] = raw
        except ValueError as exc:
            errors.append(f"{f.name}: {exc}")
    return params, errors
