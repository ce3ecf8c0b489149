"""JSON Schemas of the API's bodies and answers, as data (used to build /openapi.json)."""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMAS", "ref"]


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR = {"type": "string"}
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": _STR, "hint": _STR}},
    "Device": {"type": "object", "required": ["id", "class", "target", "tags", "online"],
               "properties": {"id": _STR, "class": {"enum": ["sensor", "camera", "vehicle",
                                                             "gateway"]},
                              "target": _STR, "tags": {"type": "object",
                                                       "additionalProperties": _STR},
                              "agent_version": _STR, "installed": _OBJ,
                              "active": {"type": ["object", "null"]},
                              "active_bundle": _NULLABLE_STR, "online": _BOOL,
                              "status_ts": _NUM, "last_seen": _NULLABLE_NUM,
                              "enrolled_at": _NUM}},
    "DevicePage": {"type": "object", "required": ["items", "total"],
                   "properties": {"items": {"type": "array", "items": ref("Device")},
                                  "total": _INT, "next_cursor": _NULLABLE_STR}},
    "EnrolRequest": {"type": "object", "required": ["id", "class", "target"],
                     "properties": {"id": _STR, "class": _STR, "target": _STR,
                                    "tags": {"type": "object", "additionalProperties": _STR}}},
    "Enrolment": {"type": "object", "required": ["device", "agent_config", "root_json"],
                  "properties": {"device": ref("Device"), "agent_config": _OBJ,
                                 "root_json": {"type": "string",
                                               "description": "the fleet's TUF root.json"}}},
    "TelemetryRecord": {"type": "object", "required": ["device_id", "ts", "kind"],
                        "properties": {"device_id": _STR, "ts": _NUM, "kind": _STR,
                                       "seq": _INT, "deployment_id": _NULLABLE_STR},
                        "additionalProperties": True},
    "TelemetryAggregate": {"type": "object",
                           "properties": {"records": _INT, "inference_records": _INT,
                                          "devices": _INT, "inferences": _INT, "errors": _INT,
                                          "error_rate": _NULLABLE_NUM,
                                          "p95_ms_max": _NULLABLE_NUM,
                                          "p95_ms_mean": _NULLABLE_NUM}},
    "Bundle": {"type": "object", "required": ["name", "version", "targets"],
               "properties": {"name": _STR, "version": _STR, "published_at": _NUM,
                              "targets": {"type": "array", "items": _STR},
                              "files": _OBJ, "manifest": _OBJ,
                              "aliases": {"type": "array", "items": _STR},
                              "lineage": {"type": ["object", "null"],
                                          "description": "registry, run and data the model "
                                                         "came from, with MLflow links"}}},
    "Alias": {"type": "object", "required": ["name", "alias", "version"],
              "properties": {"name": _STR, "alias": _STR, "version": _STR, "moved_at": _NUM,
                             "moved_by": _NULLABLE_STR, "deployment_id": _NULLABLE_STR,
                             "previous": _NULLABLE_STR}},
    "AliasWithMoves": {"allOf": [ref("Alias"), {
        "type": "object", "properties": {"moves": {"type": "array", "items": ref("Alias")}}}]},
    "AliasMoveRequest": {"type": "object", "required": ["version"],
                         "properties": {"version": _STR, "rollout": {
                             "type": ["object", "null"],
                             "properties": {"selector": {"type": "string", "default": "all"},
                                            "strategy": ref("Strategy")}}}},
    "AliasMove": {"type": "object", "required": ["alias"],
                  "properties": {"alias": ref("Alias"),
                                 "deployment": {"oneOf": [ref("DeploymentStatus"),
                                                          {"type": "null"}]}}},
    "Upload": {"type": "object", "required": ["upload", "sha256", "size"],
               "properties": {"upload": _STR, "sha256": _STR, "size": _INT}},
    "PublishRequest": {"type": "object", "required": ["upload", "targets"],
                       "properties": {"upload": {"type": "string",
                                                 "description": "id from POST /uploads"},
                                      "targets": {"type": "string",
                                                  "description": "the new targets metadata, "
                                                                 "signed offline (JSON text)"},
                                      "deltas": {"type": "object",
                                                 "additionalProperties": _STR,
                                                 "description": "delta TUF path -> upload id"}}},
    "PublishResult": {"type": "object",
                      "properties": {"name": _STR, "version": _STR, "new": _BOOL,
                                     "targets_version": _INT, "snapshot_version": _INT,
                                     "deltas": {"type": "array", "items": _STR}}},
    "Strategy": {"type": "object",
                 "properties": {"phases": {"type": "array", "items": _STR},
                                "max_per_minute": {"type": ["integer", "null"]},
                                "bake_s": _NUM, "device_timeout_s": _NUM,
                                "abort_failure_pct": _NUM, "abort_min_sample": _INT,
                                "abort_max_failures": {"type": ["integer", "null"]},
                                "max_error_rate": _NULLABLE_NUM,
                                "max_latency_factor": _NULLABLE_NUM, "min_inferences": _INT}},
    "DeployRequest": {"type": "object", "required": ["name"],
                      "description": "give 'version', or 'alias' to deploy what it names",
                      "properties": {"name": _STR, "version": _STR, "alias": _STR,
                                     "selector": {"type": "string", "default": "all"},
                                     "strategy": ref("Strategy")}},
    "Deployment": {"type": "object", "required": ["id", "bundle", "status"],
                   "properties": {"id": _STR, "bundle": _STR, "name": _STR, "version": _STR,
                                  "selector": _STR, "strategy": ref("Strategy"),
                                  "status": {"enum": ["running", "paused", "completed",
                                                      "aborted", "cancelled", "rolled-back"]},
                                  "phase_index": _INT, "phase_started_at": _NUM,
                                  "created_at": _NUM, "updated_at": _NUM,
                                  "reason": _NULLABLE_STR}},
    "DeploymentStatus": {"allOf": [ref("Deployment"), {
        "type": "object", "properties": {
            "devices": _INT, "counts": {"type": "object", "additionalProperties": _INT},
            "waiting_offline": _INT, "phases": _INT, "progress": _NUM,
            "delivery": {"type": "object", "additionalProperties": _INT,
                         "description": "delta vs full artifact downloads, bytes saved"}}}]},
    "DeploymentDevice": {"type": "object",
                         "properties": {"deployment_id": _STR, "device_id": _STR, "wave": _INT,
                                        "state": _STR, "target": _STR, "updated_at": _NUM,
                                        "notified_at": _NULLABLE_NUM, "reason": _NULLABLE_STR,
                                        "previous": _NULLABLE_STR}},
    "Blessing": {"type": "object",
                 "properties": {"name": _STR, "version": _STR, "hardware": _STR,
                                "passed": _BOOL, "report": _OBJ, "created_at": _NUM}},
    "HardwareReport": {"type": "object",
                       "description": "hardware_tests report (edgeops.hardware-report/v1)",
                       "required": ["schema", "bundle", "version", "manifest_sha256", "target",
                                    "hardware", "checks"],
                       "properties": {"schema": _STR, "bundle": _STR, "version": _STR,
                                      "manifest_sha256": _STR, "target": _STR, "hardware": _STR,
                                      "passed": _BOOL, "checks": {"type": "array",
                                                                  "items": _OBJ}},
                       "additionalProperties": True},
    "TokenRequest": {"type": "object", "required": ["role"],
                     "properties": {"role": {"enum": ["viewer", "operator", "publisher",
                                                      "admin"]},
                                    "name": _STR}},
    "Token": {"type": "object",
              "properties": {"token_id": _STR, "role": _STR, "name": _STR, "created_at": _NUM,
                             "revoked": _BOOL,
                             "token": {"type": "string", "description": "only when created"}}},
    "Health": {"type": "object", "properties": {"ok": _BOOL, "schema_version": _INT}},
    # drift monitors and their webhooks (fleet/api/alert_routes.py, docs/DRIFT.md)
    "DriftMonitorRequest": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": _STR, "cohort": {"type": "string", "default": "all"},
                       "alpha": _NUM, "correction": {"enum": ["bh", "bonferroni"]},
                       "test": {"enum": ["chi2", "g"]}, "persistence": _INT,
                       "min_samples": _INT, "retrain": _BOOL,
                       "webhooks": {"type": "array", "maxItems": 5, "items": {
                           "type": "object", "required": ["url"],
                           "properties": {"url": _STR, "secret": {
                               "type": "string", "description": "16-256 printable ASCII; "
                                                                "left out: generated, shown "
                                                                "once"}}}}}},
    "DriftMonitor": {"type": "object", "required": ["name", "cohort", "policy", "webhooks"],
                     "properties": {"name": _STR, "cohort": _STR, "policy": _OBJ,
                                    "retrain": _BOOL, "created_at": _NUM,
                                    "created_by": _NULLABLE_STR,
                                    "webhooks": {"type": "array", "items": _OBJ},
                                    "alarms": {"type": "array", "items": _OBJ}}},
}
