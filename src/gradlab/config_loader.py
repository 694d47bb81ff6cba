"""Kedro's ``OmegaConfigLoader`` with gradlab's rule for an environment's parameters.

Kedro replaces each top-level key of ``conf/base`` that an environment sets, so ``train:
{workers: 1}`` in ``conf/local`` would drop every other ``train`` option. The option sections
(``train``, ``report``) say *how* to run and merge key by key; the sections that say *what* to
run (``data``, ``grid``, ``claims``) are replaced whole: an environment's grid is its own
experiment, not the default grid plus its studies.
"""

from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

MERGED_SECTIONS = ("train", "report")


class GradlabConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose parameters merge ``MERGED_SECTIONS`` key by key."""

    def _merge_configs(
        self, config: dict[str, Any], env_config: dict[str, Any], key: str, env_path: str
    ) -> Any:
        if key != "parameters":
            return super()._merge_configs(config, env_config, key, env_path)
        merged = {**config, **env_config}
        runtime = self.runtime_params or {}
        for section in config.keys() & env_config.keys():
            base, env = config[section], env_config[section]
            if section in MERGED_SECTIONS and isinstance(base, dict) and isinstance(env, dict):
                merged[section] = OmegaConf.to_container(OmegaConf.unsafe_merge(base, env))
            elif env == runtime.get(section):
                # Kedro merges --params into both sides: the environment's files do not set
                # this section, so the base's (with the same --params) stands
                merged[section] = base
        return merged
