"""The manager's MQTT adapter (paho behind one module); see docs/FLEET_MQTT.md."""

from fleet.mqtt.adapter import (
    BrokerAddress,
    Inbound,
    MqttConnection,
    MqttOptions,
    TlsOptions,
    parse_broker_url,
)

__all__ = [
    "BrokerAddress",
    "Inbound",
    "MqttConnection",
    "MqttOptions",
    "TlsOptions",
    "parse_broker_url",
]
