"""Model registries as build sources and as the place build and deployment results go back to.

``uri`` parses ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` and ``runs:/RUN_ID/PATH`` (pure);
``mlflow_registry`` is the one adapter that talks to an MLflow tracking server (extra
``mlflow``); ``dvc`` reads DVC's ``.dvc`` hashes for data digests.
"""

from edgeops.registry.uri import RegistryUri, is_registry_uri, parse_registry_uri

__all__ = ["RegistryUri", "is_registry_uri", "parse_registry_uri"]
