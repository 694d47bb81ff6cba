"""MLflow at the edge of gradlab: the one seam through which the rest of the code tracks.

- ``parent``: the parent run kedro-mlflow opens per ``kedro run`` (its name, description, owner,
  summary metrics, claims) and the experiment's note; used by ``gradlab.hooks``.
- ``children``: one child run per trained run (``Tracker``): tags, params, metrics in batches,
  artifacts, logged by a background thread (``background``); what metrics a child gets is
  ``metrics``. Used by ``gradlab.grid_runner``.
- ``maintenance``: the store's upkeep: runs of dead processes, partial children, a tracking
  server that stopped answering, artifact locations that follow the project.

Artifacts live in ``mlruns/`` at the project root, whether a run writes them itself (sqlite) or an
MLflow server stores them for it (``gradlab.mlflow_server``); ``relocate_artifacts`` keeps the
database pointing there when the project moves or switches mode. Pipeline nodes import none of
this: the train node goes through ``gradlab.grid_runner``, the parent run through the hooks.
"""

from gradlab.tracking.children import Child, Tracker
from gradlab.tracking.maintenance import (
    ARTIFACTS_DIR,
    PROXIED_ARTIFACTS,
    reap_stale_runs,
    relocate_artifacts,
    server_gone,
    server_unreachable,
    stop_waiting_for_server,
    tracking_uri,
)
from gradlab.tracking.metrics import layer_profile
from gradlab.tracking.parent import (
    active,
    claim_active_run,
    describe_parent_run,
    end_interrupted_run,
    log_claims,
    log_grid_summary,
    parent_description,
    runs_of,
)

__all__ = [
    "ARTIFACTS_DIR",
    "PROXIED_ARTIFACTS",
    "Child",
    "Tracker",
    "active",
    "claim_active_run",
    "describe_parent_run",
    "end_interrupted_run",
    "layer_profile",
    "log_claims",
    "log_grid_summary",
    "parent_description",
    "reap_stale_runs",
    "relocate_artifacts",
    "runs_of",
    "server_gone",
    "server_unreachable",
    "stop_waiting_for_server",
    "tracking_uri",
]
