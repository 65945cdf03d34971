"""The schema of a sweep's runs in MLflow and the conversion both ways between what a run
holds (a child run as a dict of its run_id, run_name, status, tags, params and metrics: plain
strings and numbers) and the project's values
(`VariantRecord`, `ParentRun`).

Every tag name and every value format is written down here only; `jaxmlp.tracking.store`
sends these dicts to MLflow and reads them back. Nothing here imports MLflow, so the round
trip is tested without a store. Typed values travel as JSON: the setting, the configuration
(`CONFIG_JSON_TAG`), the lineage and the reliability curve. Runs logged before the
configuration had its JSON tags hold it only in their params, as Python's text of each value;
`legacy_param_value` reads those.
"""
from __future__ import annotations

import ast
import json
from typing import Any, Mapping, NamedTuple

from jaxmlp.records import VariantRecord, setting_label
from jaxmlp.tracking.batches import MAX_TAG_LENGTH

ROLE_TAG = "jaxmlp.role"
SWEEP_NAME_TAG = "jaxmlp.sweep_name"
SWEEP_HASH_TAG = "jaxmlp.sweep_hash"
SWEEP_FILE_TAG = "jaxmlp.sweep_file"
VARIANT_KEY_TAG = "jaxmlp.variant_key"
VARIANT_INDEX_TAG = "jaxmlp.variant_index"  # the variant's position in its sweep: the report's order
FAILURE_REASON_TAG = "jaxmlp.failure_reason"
SETTING_TAG = "jaxmlp.setting"  # the setting's label, for the UI
SETTING_JSON_TAG = "jaxmlp.setting_json"  # the setting's values (JSON), read back into records
CONFIG_JSON_TAG = "jaxmlp.config_json"  # the resolved configuration (JSON; longer than a tag: .2, .3, ...)
SEED_TAG = "seed"
DIVERGED_TAG = "jaxmlp.diverged"
OUTCOME_TAG = "jaxmlp.outcome"  # pruned: stopped by successive halving
LINEAGE_TAG = "jaxmlp.lineage"  # PBT: the exploit steps (epoch, source variant index) as JSON
PARETO_TAG = "jaxmlp.pareto"  # several objectives: true where the run's setting is on the Pareto front
RELIABILITY_TAG = "jaxmlp.reliability"  # the test split's reliability curve per confidence bin, as JSON
GROUP_TAG = "jaxmlp.group"
TRIAL_TAG = "jaxmlp.trial"  # an optimised sweep: the trial number of the run's setting
PROPOSAL_TAG = "jaxmlp.proposal"  # ... its proposal as JSON (values, asked after, asked at which epoch)
TOLD_TAG = "jaxmlp.told"  # ... what the study was told of it as JSON (state, values, position)
LEASE_TAG = "jaxmlp.lease"  # the process that runs a parent (jaxmlp.sweep.ownership); "" once released
SUMMARY_TAG = "jaxmlp.summary_logged"  # "true" once a parent's summary is logged and the parent ended
BEST_RUN_TAG = "jaxmlp.best_run_id"
BEST_SETTING_TAG = "jaxmlp.best_setting"
BEST_MODEL_TAG = "jaxmlp.best_model_uri"
BEST_BY_TEST_MEAN_TAG = "jaxmlp.best_setting_by_test_mean"
REGISTERED_MODEL_TAG = "jaxmlp.registered_model"
REGISTERED_MODEL_URI_TAG = "jaxmlp.registered_model_uri"  # models:/NAME@ALIAS
PARENT_RUN_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
NOTE_TAG = "mlflow.note.content"
GIT_COMMIT_TAG = "mlflow.source.git.commit"

#: A large sweep's per-epoch histories, Parquet, on its parent under this folder.
HISTORIES_FOLDER = "histories"
#: The summary table on a sweep's parent, as MLflow's table artifact (the UI shows it as a table).
SUMMARY_TABLE_FILE = "summary_table.json"
#: The Pareto front of a sweep with several objectives, on its parent as a table artifact.
PARETO_TABLE_FILE = "pareto_front.json"

#: Parameters of a child run besides its configuration.
IDENTITY_PARAMS = ("variant_key", "group")
#: A child's final metrics that a record keeps by name (the others have fields of their own).
FINAL_METRIC_PREFIXES = ("test_", "final_train_", "best_val_")


class ParentRun(NamedTuple):
    """A sweep's parent run as a resume and a report need it."""

    run_id: str
    experiment_id: str
    sweep_name: str | None
    sweep_hash: str | None
    sweep_file: str | None
    note: str
    git_commit: str | None
    status: str = "FINISHED"
    lease: str | None = None
    summarized: bool = False


def parent_tags(*, sweep_name: str, sweep_hash: str, sweep_file: str, note: str, git_commit: str | None,
                environment: Mapping[str, str], lease: str) -> dict[str, str]:
    """The tags a sweep's parent run is created with (`environment`: versions and devices)."""
    tags = {ROLE_TAG: "parent", SWEEP_NAME_TAG: sweep_name, SWEEP_HASH_TAG: sweep_hash,
            SWEEP_FILE_TAG: sweep_file, NOTE_TAG: note, LEASE_TAG: lease, **environment}
    if git_commit:
        tags[GIT_COMMIT_TAG] = git_commit
    return tags


def parent_run(run_id: str, experiment_id: str, status: str, tags: Mapping[str, str]) -> ParentRun:
    """A parent run read back from its tags."""
    return ParentRun(run_id, experiment_id, tags.get(SWEEP_NAME_TAG), tags.get(SWEEP_HASH_TAG),
                     tags.get(SWEEP_FILE_TAG), tags.get(NOTE_TAG, ""), tags.get(GIT_COMMIT_TAG), status,
                     tags.get(LEASE_TAG), tags.get(SUMMARY_TAG) == "true")


def child_tags(parent_run_id: str, *, variant_key: str, index: int, setting: Mapping[str, Any], seed: int,
               group: str, config: Mapping[str, Any], trial: tuple[int, str] | None = None) -> dict[str, str]:
    """The tags a variant's run is created with: the setting as its values (JSON) and as its
    label (for the UI); the configuration as JSON (in as many tags as its length needs); an
    optimised setting's `trial` (number, proposal JSON)."""
    tags = {ROLE_TAG: "child", PARENT_RUN_TAG: parent_run_id, VARIANT_KEY_TAG: variant_key,
            VARIANT_INDEX_TAG: str(index), SETTING_TAG: setting_label(setting),
            SETTING_JSON_TAG: json.dumps(dict(setting)), GROUP_TAG: group, SEED_TAG: str(seed)}
    tags.update(_pieces(CONFIG_JSON_TAG, json.dumps(dict(config))))
    if trial is not None:
        tags.update({TRIAL_TAG: str(trial[0]), PROPOSAL_TAG: trial[1]})
    return tags


def child_params(config: Mapping[str, Any], *, variant_key: str, group: str) -> dict[str, Any]:
    """A variant's params: its configuration by dotted key (as the UI shows and compares them)
    and its identity."""
    return {**config, "variant_key": variant_key, "group": group}


def outcome(record: VariantRecord) -> tuple[dict[str, float], dict[str, str]]:
    """The final metrics (logged at step best_epoch) and tags a trained variant's run ends with."""
    final = {**record.metrics, "best_epoch": record.best_epoch, "stopped_epoch": record.stopped_epoch,
             "diverged": float(record.diverged), "n_params": record.n_params,
             "compile_seconds": record.compile_seconds, "train_seconds": record.train_seconds,
             "epochs_trained": record.epochs_trained, "pruned_at_epoch": record.pruned_at}
    tags = {DIVERGED_TAG: str(record.diverged).lower()}
    if record.pruned_at is not None:
        tags[OUTCOME_TAG] = "pruned"
    if record.lineage:
        tags[LINEAGE_TAG] = json.dumps(record.lineage)
    if record.reliability:
        tags[RELIABILITY_TAG] = json.dumps({k: [float(f"{v:.6g}") for v in values]
                                            for k, values in record.reliability.items()})
    return {k: float(v) for k, v in final.items() if v is not None}, tags


def variant_record(child: Mapping[str, Any], history: dict[str, tuple[list[int], list[float]]] | None = None) -> VariantRecord:
    """A child run read back as its variant's record (`history`: the per-epoch metrics to carry)."""
    tags, metrics = child["tags"], child["metrics"]

    def number(key: str, kind: type) -> Any:
        return kind(metrics[key]) if key in metrics else None

    return VariantRecord(
        setting=json.loads(tags.get(SETTING_JSON_TAG, "{}")), seed=int(tags.get(SEED_TAG, 0)),
        status=child["status"], variant_key=tags.get(VARIANT_KEY_TAG),
        index=int(tags[VARIANT_INDEX_TAG]) if VARIANT_INDEX_TAG in tags else None, run_id=child["run_id"],
        diverged=tags.get(DIVERGED_TAG) == "true", best_epoch=number("best_epoch", int),
        stopped_epoch=number("stopped_epoch", int), n_params=number("n_params", int),
        train_seconds=number("train_seconds", float), compile_seconds=number("compile_seconds", float),
        epochs_trained=number("epochs_trained", int), pruned_at=number("pruned_at_epoch", int),
        lineage=json.loads(tags.get(LINEAGE_TAG, "[]")), reliability=json.loads(tags.get(RELIABILITY_TAG, "{}")),
        metrics={k: v for k, v in metrics.items() if k.startswith(FINAL_METRIC_PREFIXES)},
        config=run_config(tags, child["params"]), history=dict(history or {}))


def _pieces(name: str, text: str) -> dict[str, str]:
    """`text` in tags of MLflow's length: `name`, then `name`.2, `name`.3, ..."""
    chunks = [text[i:i + MAX_TAG_LENGTH] for i in range(0, len(text), MAX_TAG_LENGTH)] or [""]
    return {name if n == 1 else f"{name}.{n}": chunk for n, chunk in enumerate(chunks, 1)}


def _joined(tags: Mapping[str, str], name: str) -> str:
    """The text `_pieces` spread over tags."""
    pieces, n = [tags[name]], 2
    while f"{name}.{n}" in tags:
        pieces.append(tags[f"{name}.{n}"])
        n += 1
    return "".join(pieces)


def run_config(tags: Mapping[str, str], params: Mapping[str, str]) -> dict[str, Any]:
    """A child run's configuration: its JSON tags, else (runs logged before they existed) its
    params, read as Python's text of each value."""
    if CONFIG_JSON_TAG in tags:
        return json.loads(_joined(tags, CONFIG_JSON_TAG))
    return {k: legacy_param_value(v) for k, v in params.items() if k not in IDENTITY_PARAMS}


def legacy_param_value(text: str) -> Any:
    """A param as older runs wrote it (Python's `str` of the value) back as the value:
    '0.5' -> 0.5, '[8, 8]' -> [8, 8], 'None' -> None; text that is no literal stays text ('relu')."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def sweep_order(child: Mapping[str, Any]) -> tuple[float, str]:
    """Children in the order of their sweep's expansion (runs without an index last), then by name."""
    index = child["tags"].get(VARIANT_INDEX_TAG)
    return (int(index) if index is not None else float("inf"), child["run_name"] or "")


def trial_of(child: Mapping[str, Any]) -> dict[str, Any] | None:
    """An optimised sweep's child run as its trial number, proposal JSON and told JSON (None
    before the study was told); None for a run of no trial."""
    tags = child["tags"]
    if TRIAL_TAG not in tags:
        return None
    return {"trial": int(tags[TRIAL_TAG]), "proposal": tags[PROPOSAL_TAG], "told": tags.get(TOLD_TAG)}
