"""JobSpec ⇄ proto: the YAML-shaped spec mapping and the typed `raysft.v1.JobSpec` message.

The proto mirrors raysft.config.JobSpec name for name, so the conversion walks message descriptors
instead of listing fields: a field added to both (the coming `tune` section) converts with no code here.
Conventions: an unset optional field (or enum value 0) is left out of the mapping, so the spec's
default applies; enum values are `<ENUM_NAME>_<VALUE>` in upper case (`LOSS_ON_LAST_ASSISTANT` is
`last_assistant`, `USE_GPU_TRUE` is `true`). Three spec fields have no one-to-one proto shape and are
handled by path: `model.lora.target_modules` ("all-linear" or a list), `train.max_grad_norm` (null turns
clipping off: `no_max_grad_norm` in the proto) and `data.train` (plain paths allowed).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from raysft.config import SpecError, Violation
from raysft.service.api.speclimits import spec_size_problems
from raysft.service.v1 import jobs_pb2

__all__ = ["spec_to_proto", "spec_from_proto", "enum_value_name"]

_ALL_LINEAR = "all-linear"
_VALUE = "google.protobuf.Value"  # any JSON value: tune choice / grid items
_NO_CLIP = "no_max_grad_norm"  # the proto-only half of the train.grad_clipping oneof


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_value_name(enum: EnumDescriptor, number: int) -> Any:
    """The spec value of enum `number` ("lora", True, ...), or None for 0 / unknown numbers."""
    value = enum.values_by_number.get(number)
    if value is None or number == 0:
        return None
    text = value.name[len(_enum_prefix(enum)):].lower()
    return {"true": True, "false": False}.get(text, text)


def _enum_number(enum: EnumDescriptor, value: Any) -> int | None:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    found = enum.values_by_name.get(_enum_prefix(enum) + text.upper())
    return None if found is None or found.number == 0 else found.number


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ----------------------------------------------------------------------------------- to proto


def spec_to_proto(raw: dict) -> jobs_pb2.JobSpec:
    """A YAML-shaped spec mapping as a `raysft.v1.JobSpec` message.

    Values are copied as given (an out-of-range rank stays out of range: the server validates); keys the
    message does not have and values of the wrong type are errors. Clients should validate with
    `raysft.config.parse_spec` first and pass `spec.model_dump(mode="json", exclude_unset=True)` so that
    only what the user wrote travels and the server fills in the defaults.

    Raises:
        SpecError: unknown keys (with a did-you-mean) or values the message cannot hold.
    """
    msg = jobs_pb2.JobSpec()
    problems: list[Violation] = []
    _fill(msg, raw, "", problems)
    if problems:
        raise SpecError(problems)
    return msg


def _fill(msg: Message, raw: Any, path: str, problems: list[Violation]) -> None:
    if not isinstance(raw, dict):
        problems.append(Violation(path, f"must be a mapping of keys to values; got {type(raw).__name__}"))
        return
    fields = {f.name: f for f in msg.DESCRIPTOR.fields if f.name != _NO_CLIP}
    for key, value in raw.items():
        p = _join(path, key)
        field = fields.get(key)
        if field is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            problems.append(Violation(p, f"unknown key; {hint}"))
        elif value is None:
            if p == "train.max_grad_norm":
                msg.no_max_grad_norm = True
            # Otherwise null is the default, as when the key is left out.
        elif _is_map(field):
            _fill_map(getattr(msg, key), field, value, p, problems)
        elif field.is_repeated:
            _fill_list(msg, field, value, p, problems)
        elif field.message_type is not None:
            sub = getattr(msg, key)
            sub.SetInParent()  # an empty section ({}) is still present
            _fill(sub, value, p, problems)
        else:
            _set_scalar(msg, field, value, p, problems)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _fill_map(target, field: FieldDescriptor, value: Any, path: str, problems: list[Violation]) -> None:
    if not isinstance(value, dict):
        problems.append(Violation(path, f"must be a mapping of keys to values; got {value!r}"))
        return
    holds_messages = field.message_type.fields_by_name["value"].message_type is not None
    for k, v in value.items():
        if holds_messages:
            _fill(target[str(k)], v, _join(path, k), problems)
            continue
        try:
            target[str(k)] = float(v) if isinstance(v, int) and not isinstance(v, bool) else v
        except (TypeError, ValueError):
            problems.append(Violation(_join(path, k), f"must be a number (got {v!r})"))


def _fill_list(msg: Message, field: FieldDescriptor, value: Any, path: str, problems: list[Violation]) -> None:
    if path == "model.lora.target_modules" and isinstance(value, str):
        value = [value]
    if path == "data.train" and isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        problems.append(Violation(path, f"must be a list; got {value!r}"))
        return
    target = getattr(msg, field.name)
    for i, item in enumerate(value):
        if field.message_type is not None and field.message_type.full_name == _VALUE:
            try:
                json_format.ParseDict(item, target.add())
            except (json_format.ParseError, TypeError, ValueError):
                problems.append(Violation(_join(path, i), f"must be a JSON value (got {item!r})"))
        elif field.message_type is not None:
            if path == "data.train" and isinstance(item, str):
                item = {"path": item}
            _fill(target.add(), item, _join(path, i), problems)
        else:
            try:
                target.append(item)
            except (TypeError, ValueError):
                problems.append(Violation(_join(path, i), f"must be a string (got {item!r})"))


def _set_scalar(msg: Message, field: FieldDescriptor, value: Any, path: str, problems: list[Violation]) -> None:
    if field.enum_type is not None:
        number = _enum_number(field.enum_type, value)
        if number is None:
            choices = [enum_value_name(field.enum_type, v.number) for v in field.enum_type.values if v.number]
            problems.append(Violation(path, f"got {value!r}; must be one of {choices}"))
        else:
            setattr(msg, field.name, number)
        return
    if field.type == FieldDescriptor.TYPE_DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        setattr(msg, field.name, value)
    except (TypeError, ValueError):
        kind = {FieldDescriptor.TYPE_INT64: "an integer", FieldDescriptor.TYPE_DOUBLE: "a number",
                FieldDescriptor.TYPE_BOOL: "true or false"}.get(field.type, "a string")
        problems.append(Violation(path, f"must be {kind} (got {value!r})"))


# --------------------------------------------------------------------------------- from proto


def spec_from_proto(msg: jobs_pb2.JobSpec) -> dict:
    """The spec mapping a `raysft.v1.JobSpec` carries: only fields that are set, ready for `parse_spec`.

    Raises:
        SpecError: the message breaks a size limit (raysft.service.api.speclimits), or holds an enum number this
            server does not know (proto3 enums accept any number).
    """
    problems = spec_size_problems(msg)
    if problems:
        raise SpecError(problems)
    out = _to_dict(msg, "", problems)
    if problems:
        raise SpecError(problems)
    return out


def _to_dict(msg: Message, path: str, problems: list[Violation]) -> dict:
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        name, p = field.name, _join(path, field.name)
        value = getattr(msg, name)
        if name == _NO_CLIP:
            if msg.WhichOneof("grad_clipping") == _NO_CLIP and value:
                out["max_grad_norm"] = None
        elif _is_map(field):
            if len(value):
                holds_messages = field.message_type.fields_by_name["value"].message_type is not None
                out[name] = {k: _to_dict(v, _join(p, k), problems) if holds_messages else v for k, v in value.items()}
        elif field.is_repeated:
            if len(value):
                out[name] = [_item(v, field, _join(p, i), problems) for i, v in enumerate(value)]
        elif field.message_type is not None:
            if msg.HasField(name):
                out[name] = _to_dict(value, p, problems)
        elif field.enum_type is not None:
            if value and field.enum_type.values_by_number.get(value) is None:
                choices = [enum_value_name(field.enum_type, v.number) for v in field.enum_type.values if v.number]
                problems.append(Violation(p, f"unknown value {value}; must be one of {choices}"))
            elif value:
                out[name] = enum_value_name(field.enum_type, value)
        elif field.has_presence and msg.HasField(name):
            out[name] = value
    if path == "model.lora" and out.get("target_modules") == [_ALL_LINEAR]:
        out["target_modules"] = _ALL_LINEAR
    return out


def _item(value: Any, field: FieldDescriptor, path: str, problems: list[Violation]) -> Any:
    if field.message_type is None:
        return value
    if field.message_type.full_name == _VALUE:
        return _json_numbers(json_format.MessageToDict(value))
    return _to_dict(value, path, problems)


def _json_numbers(value: Any) -> Any:
    # google.protobuf.Value holds every number as a double; 16.0 goes back to 16 as YAML would have read it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    return value
