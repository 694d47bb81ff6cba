"""Console logs that fit where they go: Rich on a terminal, one plain line per record elsewhere.

``conf/logging.yml`` writes plain lines: Kedro 1.7 takes logging classes only from ``logging``,
``kedro.logging`` and the modules named in ``KEDRO_LOGGING_MODULE_ALLOWLIST``, so it cannot name
a gradlab class. ``configure_console`` is a ``kedro.init`` plugin hook (pyproject.toml): the
``kedro`` command calls it at start-up, after that configuration, before plugins such as
kedro-mlflow load.
"""

import logging

from kedro.logging import RichHandler
from rich.console import Console

# Per logger, text of INFO lines and warnings a gradlab user can do nothing about. MLflow's
# type-hint warning is issued under its own ``simplefilter("once")``, which takes precedence over
# any ``warnings.filterwarnings``; as a record of the ``py.warnings`` logger it can be dropped.
UNACTIONABLE = {
    "py.warnings": ("Add type hints to the `predict` method",),
    "kedro_mlflow.framework.hooks.mlflow_hook": ("Registering new custom resolver",),
}


def configure_console() -> None:
    """Route Python warnings into logging, drop the unactionable records, and hand the plain
    console handler of ``conf/logging.yml`` to Rich if it writes to a terminal."""
    logging.captureWarnings(True)
    for name, texts in UNACTIONABLE.items():
        logging.getLogger(name).addFilter(_Drop(texts))
    use_rich(logging.getLogger())


def use_rich(logger: logging.Logger) -> None:
    """Replace the handlers of ``logger`` that write plain text to a terminal with Kedro's
    ``RichHandler`` (colours, columns that fit the terminal, Rich tracebacks) on that terminal.

    Args:
        logger: The logger whose handlers to replace, the root logger for ``kedro``.
    """
    for plain in list(logger.handlers):
        if type(plain) is not logging.StreamHandler or not plain.stream.isatty():
            continue  # files, pipes and handlers of other classes stay as they are
        rich = RichHandler(console=Console(file=plain.stream), rich_tracebacks=True)
        rich.setLevel(plain.level)
        logger.removeHandler(plain)
        logger.addHandler(rich)


class _Drop(logging.Filter):
    """Drops the records whose message contains one of ``texts``."""

    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)
