"""Kedro project settings."""

from gradlab.hooks import ValidateParametersHook

# Validation runs before any node, on the parameters with ``--params`` merged in.
HOOKS = (ValidateParametersHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
