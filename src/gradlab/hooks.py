"""Kedro hooks: validate every parameter before the first node; own the MLflow parent run."""

from typing import Any

from kedro.framework.hooks import hook_impl

from gradlab.core.config import validate_parameters
from gradlab.tracking import claim_active_run


class ValidateParametersHook:
    """Reject bad parameters (with ``--params`` overrides) before anything is loaded or trained."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        validate_parameters(context.params)


class MlflowOwnerHook:
    """Tag kedro-mlflow's parent run with this process, and mark runs of dead processes KILLED."""

    @hook_impl
    def before_node_run(self) -> None:
        claim_active_run()
