"""Deployments: the desired state of the serving fleet, stored in the platform database.

``table`` holds the row, ``manifest`` turns plain data (JSON bodies, stored rows, YAML
manifests) into checked :class:`~aiforge.cluster.deployments.DeploymentSpec` s,
``repository`` the queries, ``service`` the operations (and the controller's
:class:`~aiforge.cluster.sources.DeploymentSource`), ``schemas`` and ``api`` the
``/admin/v1/deployments`` routes.
"""

from aiforge.platform.deployments.api import LiveReplicas, build_deployments_router
from aiforge.platform.deployments.manifest import (
    ManifestEntry,
    ManifestError,
    check_spec,
    parse_manifest,
    spec_from_mapping,
)
from aiforge.platform.deployments.service import (
    ApplyResult,
    DeploymentService,
    StoredDeployment,
)

__all__ = [
    "ApplyResult",
    "DeploymentService",
    "LiveReplicas",
    "ManifestEntry",
    "ManifestError",
    "StoredDeployment",
    "build_deployments_router",
    "check_spec",
    "parse_manifest",
    "spec_from_mapping",
]
