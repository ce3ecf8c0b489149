"""The broker's authorisation as Mosquitto dynamic-security data: roles, clients, commands.

Why it exists: Mosquitto's ACL file does not check subscriptions (a device could join the
managers' ``$share`` group and swallow its share of every device's reports) and cannot tie a
client id to an identity. The dynamic security plugin checks every subscribe against
``subscribeLiteral``/``subscribePattern`` ACLs, and it is changed at run time through its
control topic, so enrolment and revocation reach the broker without a restart.

Everything here is pure: the ACLs come from the topic builders in
:mod:`edgeops.protocol.topics` (docs/PROTOCOL.md, "Topic tree"), so the broker follows the
protocol by construction. :mod:`fleet.broker_config` writes :func:`initial_config`;
:mod:`fleet.broker_admin` sends :func:`grant_device` / :func:`revoke_device` over MQTT.

The model (Mosquitto 2.0.11, observed in tests/security/test_broker_dynsec.py):

* every client gets nothing by default (``defaultACLAccess`` all false but ``unsubscribe``);
* one role per device (``edgeops-device-<id>``) with literal topics: the plugin of 2.0 has no
  ``%u`` substitution, so a pattern role cannot say "its own";
* one shared read-only role for the TUF metadata and artifact chunks every device reads;
* the manager role: everything under the prefix, and the only ``$share/edgeops-managers/``
  subscriptions; the broker-admin role: the plugin's control topic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeops.errors import ConfigError, UsageError
from edgeops.protocol import topics

__all__ = [
    "ADMIN_ROLE",
    "CONTROL_TOPIC",
    "DEVICE_PUBLISH",
    "DEVICE_SUBSCRIBE",
    "MANAGER_ROLE",
    "RESPONSE_TOPIC",
    "SHARED_DEVICE_ROLE",
    "Acl",
    "DynsecRefused",
    "check_responses",
    "device_acls",
    "device_role",
    "grant_device",
    "initial_config",
    "manager_acls",
    "password_entry",
    "revoke_device",
    "shared_device_acls",
]

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
MANAGER_ROLE = "edgeops-manager"
ADMIN_ROLE = "edgeops-broker-admin"
SHARED_DEVICE_ROLE = "edgeops-devices-shared"
DEVICE_PUBLISH = ("status", "state", "telemetry", "fetch")
DEVICE_SUBSCRIBE = ("desired", "commands", "ack")   # ack: the manager's end-to-end acks
PBKDF2_ITERATIONS = 20_000  # the plugin's sha512-pbkdf2; only the manager has a password
_SALT_BYTES = 12           # what mosquitto_dynamic_security 2.0 reads


class DynsecRefused(ConfigError):
    """The broker's dynamic-security plugin answered a command with an error."""


@dataclass(frozen=True)
class Acl:
    """One dynamic-security ACL entry (acltype as the plugin spells it)."""

    acltype: str   # publishClientSend, publishClientReceive, subscribeLiteral, subscribePattern
    topic: str
    allow: bool = True
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow,
                "priority": self.priority}


def device_role(device_id: str) -> str:
    if not topics.valid_device_id(device_id):
        raise UsageError(f"invalid device id {device_id!r}",
                         hint="device ids are letters, digits, '.', '_' and '-'")
    return f"edgeops-device-{device_id}"


def device_acls(device_id: str) -> list[Acl]:
    """Its own uplink topics to publish, its own downlink topics to subscribe and receive."""
    acls = [Acl("publishClientSend", topics.device_topic(device_id, c)) for c in DEVICE_PUBLISH]
    for c in DEVICE_SUBSCRIBE:
        own = topics.device_topic(device_id, c)
        acls += [Acl("subscribeLiteral", own), Acl("publishClientReceive", own)]
    return acls


def shared_device_acls() -> list[Acl]:
    """The read-only topics every device shares: artifact chunks and retained TUF metadata."""
    chunks = topics.artifact_chunks("0" * 64).replace("0" * 64, "+")
    metadata = topics.tuf_metadata("x.json").rsplit("/", 1)[0] + "/#"
    return [Acl(t, f) for f in (chunks, metadata)
            for t in ("subscribePattern", "publishClientReceive")]


def manager_acls() -> list[Acl]:
    everything = f"{topics.PREFIX}/#"
    return [Acl("publishClientSend", everything), Acl("publishClientReceive", everything),
            Acl("subscribePattern", everything),
            Acl("subscribePattern", topics.shared(everything))]


def _admin_acls() -> list[Acl]:
    control = "$CONTROL/dynamic-security/#"
    return [Acl("publishClientSend", control), Acl("publishClientReceive", control),
            Acl("subscribePattern", control)]


def _role(name: str, acls: list[Acl]) -> dict[str, Any]:
    return {"rolename": name, "acls": [a.to_dict() for a in acls]}


def password_entry(password: str, *, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """The plugin's stored form of a password: base64 PBKDF2-HMAC-SHA512, salt, iterations."""
    if len(password) < 16:
        raise UsageError("the broker admin password is shorter than 16 characters")
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": iterations}


def _device_client(device_id: str) -> dict[str, Any]:
    return {"username": device_id, "textname": "edgeops device",
            "roles": [{"rolename": device_role(device_id)}, {"rolename": SHARED_DEVICE_ROLE}]}


def initial_config(manager_identity: str, manager_password: str, *,
                   devices: Sequence[str] = (), salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's configuration file: the manager, and the ``devices`` already enrolled
    (a fleet moving from the ACL file keeps its devices' permissions).

    The manager is a client with a password (its own listener, where client ids are free so
    several workers can share it) and, through its certificate's CN, on the device listener.
    """
    if topics.valid_device_id(manager_identity):
        raise UsageError(f"manager identity {manager_identity!r} could also be a device id",
                         hint="keep a character devices cannot use, e.g. '@'")
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
        "clients": [{"username": manager_identity, "textname": "edgeops fleet manager",
                     "roles": [{"rolename": MANAGER_ROLE}, {"rolename": ADMIN_ROLE}],
                     **password_entry(manager_password, salt=salt)},
                    *(_device_client(d) for d in sorted(set(devices)))],
        "groups": [],
        "roles": [_role(MANAGER_ROLE, manager_acls()), _role(ADMIN_ROLE, _admin_acls()),
                  _role(SHARED_DEVICE_ROLE, shared_device_acls()),
                  *(_role(device_role(d), device_acls(d)) for d in sorted(set(devices)))],
    }


def grant_device(device_id: str) -> list[dict[str, Any]]:
    """Control commands that let an enrolled device use its own topics (idempotent)."""
    return [{"command": "createRole", "rolename": device_role(device_id),
             "acls": [a.to_dict() for a in device_acls(device_id)]},
            {"command": "createClient", **_device_client(device_id)}]


def revoke_device(device_id: str) -> list[dict[str, Any]]:
    """Control commands that take everything from a device; deleteClient also disconnects it.

    ``disableClient`` comes first: it closes the open session at once, whatever follows.
    """
    return [{"command": "disableClient", "username": device_id},
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)}]


# Answers that leave the broker in the state the command asked for.
_IDEMPOTENT = {"createRole": "already exists", "createClient": "already exists",
               "disableClient": "not found", "deleteClient": "not found",
               "deleteRole": "not found"}


def check_responses(sent: list[dict[str, Any]], answer: bytes) -> None:
    """Raise :class:`DynsecRefused` for the first error that is not "already so"."""
    try:
        got = json.loads(answer)["responses"]
    except (ValueError, KeyError, TypeError):
        raise DynsecRefused("the broker's dynamic-security answer is not JSON with "
                            "'responses'") from None
    if not isinstance(got, list) or len(got) != len(sent):
        raise DynsecRefused(f"the broker answered {len(got) if isinstance(got, list) else 0} "
                            f"of {len(sent)} dynamic-security commands")
    for cmd, resp in zip(sent, got, strict=True):
        error = resp.get("error") if isinstance(resp, dict) else "malformed answer"
        if error and _IDEMPOTENT.get(cmd["command"], "\0") not in str(error).lower():
            raise DynsecRefused(f"the broker refused {cmd['command']}: {error}",
                                hint="check the broker runs the generated dynamic-security "
                                     "config and the manager has the broker-admin role")
