"""The fleet manager: registry, TUF repository, staged rollouts, HTTP API and MQTT delivery."""
