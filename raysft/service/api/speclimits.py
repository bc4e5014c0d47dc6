"""Size limits of a spec sent to the job service, checked on the message before anything else reads it.

A spec is a few kilobytes; without limits one request could hold the server's CPU (a 300,000-point tune grid
took 13 s to validate) or make every later ListJobs page too big for its client. Each limit names the field:
`INVALID_ARGUMENT data.train: at most 256 items (got 5000)`. The walk costs in proportion to the message, which
is bounded first by its serialized size.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from raysft.config import Violation
from raysft.service.v1 import jobs_pb2

__all__ = ["spec_size_problems", "MAX_SPEC_BYTES", "MAX_STRING", "MAX_ITEMS", "MAX_ENTRIES", "MAX_GRID_POINTS"]

MAX_SPEC_BYTES = 64 * 1024  # serialized; the largest shipped example is ~2 kB
MAX_STRING = 4096  # characters of any text field (paths, hub ids, templates)
MAX_ITEMS = 256  # items of any list (data files, target modules, one search dimension's values)
MAX_ENTRIES = 64  # entries of any map (search space keys, resources per worker)
MAX_VALUE_BYTES = 4096  # one choice / grid value
MAX_GRID_POINTS = 10_000  # trials one grid search expands to


def spec_size_problems(msg: jobs_pb2.JobSpec) -> list[Violation]:
    """Every size limit `msg` breaks, by dotted field path ([] when it is within all of them)."""
    size = msg.ByteSize()
    if size > MAX_SPEC_BYTES:
        return [Violation("spec", f"at most {MAX_SPEC_BYTES} bytes serialized (got {size}); a spec this large is "
                                  "no fine-tuning job: put data in files and name them in data.train")]
    problems: list[Violation] = []
    _walk(msg, "", problems)
    if msg.HasField("tune"):
        problems += _grid_problems(msg.tune)
    return problems


def _walk(msg: Message, path: str, problems: list[Violation]) -> None:
    for field, value in msg.ListFields():
        p = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(field, value, p, problems)
        elif field.is_repeated:
            if len(value) > MAX_ITEMS:
                problems.append(Violation(p, f"at most {MAX_ITEMS} items (got {len(value)})"))
                continue
            for i, item in enumerate(value):
                _check_item(field, item, f"{p}.{i}", problems)
        else:
            _check_item(field, value, p, problems)


def _check_map(field: FieldDescriptor, value, path: str, problems: list[Violation]) -> None:
    if len(value) > MAX_ENTRIES:
        problems.append(Violation(path, f"at most {MAX_ENTRIES} entries (got {len(value)})"))
        return
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        if len(key) > 128:
            problems.append(Violation(path, f"keys hold at most 128 characters (got {len(key)})"))
        else:
            _check_item(value_field, item, f"{path}.{key}", problems)


def _check_item(field: FieldDescriptor, value, path: str, problems: list[Violation]) -> None:
    if field.type == FieldDescriptor.TYPE_STRING and len(value) > MAX_STRING:
        problems.append(Violation(path, f"at most {MAX_STRING} characters (got {len(value)})"))
    elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Value":
        if value.ByteSize() > MAX_VALUE_BYTES:
            problems.append(Violation(path, f"at most {MAX_VALUE_BYTES} bytes per value (got {value.ByteSize()})"))
    elif field.message_type is not None:
        _walk(value, path, problems)


def _grid_problems(tune: jobs_pb2.TuneSpec) -> list[Violation]:
    """The grid a search expands to, as raysft.tune.space counts it: grid lists, and choice lists under search GRID."""
    points = 1
    for dist in tune.search_space.values():
        size = len(dist.grid) or (len(dist.choice) if tune.search == jobs_pb2.TuneSpec.SEARCH_GRID else 0)
        points *= max(size, 1)
    if points > MAX_GRID_POINTS:
        return [Violation("tune.search_space", f"the grid holds {points} points, at most {MAX_GRID_POINTS} are run by "
                                               "one job; search fewer values, or use search: random / optuna")]
    return []
