"""Token-usage records read and summed: the names providers give each count.

A record is whatever a runtime logged per model call; the counts are looked
for under each provider's names, at the top and in the objects a response
nests them in. What cannot be used makes the record irregular, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..storage.files import is_count

__all__ = [
    "MODEL_KEYS",
    "SUMS",
    "TOKEN_ALIASES",
    "TOKEN_FIELDS",
    "UNKNOWN_MODEL",
    "add_sums",
    "parse_usage_record",
    "sum_usage",
    "zero_sums",
]

#: The sums, in the order of the table and the CSV.
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "thinking_tokens",
)
#: The names under which providers and runtimes log each sum; the first found counts.
TOKEN_ALIASES: dict[str, tuple[str, ...]] = {
    "input_tokens": ("input_tokens", "prompt_tokens", "promptTokenCount"),
    "output_tokens": ("output_tokens", "completion_tokens", "candidatesTokenCount"),
    "cache_read_tokens": (
        "cache_read_input_tokens",
        "cache_read_tokens",
        "cached_tokens",
        "cachedContentTokenCount",
    ),
    "cache_creation_tokens": (
        "cache_creation_input_tokens",
        "cache_creation_tokens",
        "cache_write_tokens",
    ),
    "thinking_tokens": ("thinking_tokens", "reasoning_tokens", "thoughtsTokenCount"),
}
MODEL_KEYS = ("model", "model_name", "model_id")
#: Objects a record may nest its counts in (an API response's ``usage``).
_NESTED = ("usage", "usageMetadata")
_DETAILS = (
    "prompt_tokens_details",
    "input_tokens_details",
    "completion_tokens_details",
    "output_tokens_details",
)
UNKNOWN_MODEL = "(unknown)"
#: Every sum kept per model, in the order of the CSV.
SUMS = ("calls", *TOKEN_FIELDS, "irregular_records")


def _first(sources: Sequence[dict[str, Any]], keys: Sequence[str]) -> Any:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def parse_usage_record(record: dict[str, Any]) -> tuple[str, dict[str, int], bool]:
    """The model, the token counts and whether the record is irregular.

    A record is irregular when it has no model, no token count at all, or a
    count that is not a non-negative integer; what it has is still counted.
    """
    sources = [record]
    sources.extend(record[key] for key in _NESTED if isinstance(record.get(key), dict))
    for source in list(sources):
        sources.extend(source[key] for key in _DETAILS if isinstance(source.get(key), dict))
    counts: dict[str, int] = {}
    irregular = False
    for field in TOKEN_FIELDS:
        value = _first(sources, TOKEN_ALIASES[field])
        if value is None:
            continue
        if is_count(value):
            counts[field] = value
        else:
            irregular = True
    if not counts:
        irregular = True
    model = _first(sources, MODEL_KEYS)
    if not (isinstance(model, str) and model.strip()):
        model = UNKNOWN_MODEL
        irregular = True
    return model, counts, irregular


def zero_sums() -> dict[str, int]:
    """Every sum at zero."""
    return dict.fromkeys(SUMS, 0)


def add_sums(into: dict[str, int], sums: dict[str, int]) -> None:
    """Add ``sums`` into ``into``, sum by sum."""
    for key in SUMS:
        into[key] += sums[key]


def sum_usage(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The sums of one session's records, per model."""
    per_model: dict[str, dict[str, int]] = {}
    for record in records:
        model, counts, irregular = parse_usage_record(record)
        sums = per_model.setdefault(model, zero_sums())
        sums["calls"] += 1
        sums["irregular_records"] += irregular
        for field, value in counts.items():
            sums[field] += value
    return per_model
