"""Kedro project settings."""

import warnings

from gradlab.hooks import (
    MlflowOwnerHook,
    RunGuardHook,
    SetupLockHook,
    SetupLockReleaseHook,
    ValidateParametersHook,
)

# Validation runs before any node, on the parameters with ``--params`` merged in. Among the
# ``tryfirst`` hooks pluggy calls the last registered first: validation, then the setup lock.
_validation, _setup = ValidateParametersHook(), SetupLockHook()
HOOKS = (
    _setup,
    _validation,
    SetupLockReleaseHook(_setup),
    RunGuardHook(_validation),
    MlflowOwnerHook(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

# Library-internal deprecation chatter that a gradlab user can do nothing about.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
