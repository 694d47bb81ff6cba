"""Kedro project settings."""

import warnings

from omegaconf.resolvers import oc

from gradlab.config_loader import GradlabConfigLoader
from gradlab.hooks import (
    ArtifactLocationHook,
    MlflowOwnerHook,
    ParentRunHook,
    RunGuardHook,
    SetupLockHook,
    SetupLockReleaseHook,
    StoreCheckHook,
    ValidateParametersHook,
)

# Validation runs before any node, on the parameters with ``--params`` merged in. Among the
# ``tryfirst`` hooks pluggy calls the last registered first: the store check, validation, then the
# setup lock.
# Among the ``trylast`` ones it calls the first registered first: the artifact locations are
# rewritten (after kedro-mlflow's setup, an ordinary hook) before the setup lock is released.
_validation, _setup = ValidateParametersHook(), SetupLockHook()
HOOKS = (
    _setup,
    _validation,
    StoreCheckHook(),
    ArtifactLocationHook(),
    SetupLockReleaseHook(_setup),
    RunGuardHook(_validation),
    ParentRunHook(_validation),
    MlflowOwnerHook(),
)

# train and report options in an environment merge key by key into conf/base's
CONFIG_LOADER_CLASS = GradlabConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Kedro reads environment variables in credentials only; mlflow.yml takes
    # MLFLOW_TRACKING_URI this way (a server instead of the sqlite file)
    "custom_resolvers": {"oc.env": oc.env},
}

# Library-internal deprecation chatter that a gradlab user can do nothing about.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
