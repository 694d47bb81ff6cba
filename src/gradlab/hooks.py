"""Kedro hooks: validate every parameter before the first node runs."""

from typing import Any

from kedro.framework.hooks import hook_impl

from gradlab.core.config import validate_parameters


class ValidateParametersHook:
    """Reject bad parameters (with ``--params`` overrides) before anything is loaded or trained."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        validate_parameters(context.params)
