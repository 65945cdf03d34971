"""Published numbers to compare a sweep with: a references file (YAML), validated, and each
entry matched to the setting it belongs to.

    references:
      - setting: {model.hidden: [800, 800], model.activation: sigmoid}   # or the label, a string
        metric: test_error_percent        # default; test_loss for regression sweeps
        value: 1.60
        source: Srivastava et al. 2014, JMLR 15, Table 2
        note: optional words on how the protocol differs
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, Field, ValidationError

from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.config import CONFIG_KEYS, STRICT, did_you_mean, format_validation_error
from jaxmlp.records import VariantRecord
from jaxmlp.report.errors import ReportError
from jaxmlp.report.tables import ERROR_PERCENT, by_setting


class Reference(BaseModel):
    """One published number: the setting it belongs to, the metric, the value and where it comes from."""

    model_config = STRICT
    setting: str | dict[str, Any]
    metric: Literal["test_error_percent", "test_loss"] = "test_error_percent"
    value: float
    source: str = Field(min_length=1)
    note: str = ""


class ReferencesFile(BaseModel):
    model_config = STRICT
    description: str = ""
    references: list[Reference]


def load_references(path: str | Path) -> list[dict[str, Any]]:
    """Validated entries of a references file; errors name the file, the entry and the key."""
    path = Path(path)
    try:
        raw = load_bounded_yaml(path)
        parsed = ReferencesFile.model_validate(raw if raw is not None else {})
    except OSError as err:
        raise ReportError(f"{path}: cannot read the references file: {err}") from None
    except YamlError as err:
        raise ReportError(str(err)) from None
    except ValidationError as err:
        raise ReportError(format_validation_error(err, str(path), ReferencesFile)) from None
    for i, entry in enumerate(parsed.references):
        for key in entry.setting if isinstance(entry.setting, dict) else ():
            if key not in CONFIG_KEYS:
                raise ReportError(f"{path}: references[{i}].setting.{key}: unknown configuration key"
                                  f"{did_you_mean(key, list(CONFIG_KEYS))}; keys look like model.hidden, "
                                  "model.activation, optimizer.max_norm")
    return [entry.model_dump() for entry in parsed.references]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def match_references(records: Sequence[VariantRecord], entries: Sequence[Mapping[str, Any]],
                     metric: str) -> dict[str, Mapping[str, Any]]:
    """Setting -> the first entry (of this metric) whose `setting` is the setting's label, or a mapping of
    configuration keys to values that all equal the setting's resolved configuration (its swept values
    where a record has no configuration)."""
    found = {}
    for setting, runs in by_setting(records).items():
        config = runs[0].config or runs[0].setting
        for entry in entries:
            want = entry["setting"]
            if entry.get("metric", ERROR_PERCENT) == metric and (
                    want == setting if isinstance(want, str)
                    else all(k in config and _same(config[k], v) for k, v in want.items())):
                found[setting] = entry
                break
    return found
