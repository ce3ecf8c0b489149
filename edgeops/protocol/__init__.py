"""The fleet protocol (docs/PROTOCOL.md): topic tree, message schemas, signed commands.

Pure data and functions, no sockets: paho lives behind one adapter per side (fleet, agent).
"""

from edgeops.protocol import topics
from edgeops.protocol.acks import Ack
from edgeops.protocol.bodies import (
    BodyError,
    BundleRef,
    CancelCommand,
    CommandBody,
    ConfigCommand,
    DeployCommand,
    ReportStateCommand,
    RollbackCommand,
    parse_body,
)
from edgeops.protocol.commands import (
    COMMAND_KINDS,
    Command,
    CommandRejected,
    SignedCommand,
    check_command,
)
from edgeops.protocol.messages import (
    PROTOCOL_VERSION,
    Chunk,
    DevicePhase,
    FetchRequest,
    MessageError,
    StateReport,
    StatusMessage,
    TelemetryBatch,
    decode_chunk,
    decode_json,
    encode_chunk,
)
from edgeops.protocol.records import RecordError, TelemetryRecord, UnknownRecord, parse_record

__all__ = [
    "COMMAND_KINDS",
    "PROTOCOL_VERSION",
    "Ack",
    "BodyError",
    "BundleRef",
    "CancelCommand",
    "Chunk",
    "Command",
    "CommandBody",
    "CommandRejected",
    "ConfigCommand",
    "DeployCommand",
    "DevicePhase",
    "FetchRequest",
    "MessageError",
    "RecordError",
    "ReportStateCommand",
    "RollbackCommand",
    "SignedCommand",
    "StateReport",
    "StatusMessage",
    "TelemetryBatch",
    "TelemetryRecord",
    "UnknownRecord",
    "check_command",
    "decode_chunk",
    "decode_json",
    "encode_chunk",
    "parse_body",
    "parse_record",
    "topics",
]
