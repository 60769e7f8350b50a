"""`eager-lm-eval`: lm-eval's own command line with eager-eval's models registered.

The same as `lm_eval` (every option, subcommand and output), for environments where the start-up
hook does not run: Python started with -S or -I, site-packages that skip `.pth` files, or
EAGER_EVAL_NO_LM_EVAL_HOOK set. It registers `eager-hf` and `eager-vllm` after lm-eval's own
models, then hands the command line to lm-eval (`lm_eval.__main__.cli_evaluate`).
"""

from __future__ import annotations


def main() -> None:
    import lm_eval.api.registry as registry
    from lm_eval.__main__ import cli_evaluate

    from eager_eval.frontends.lm_eval.autoreg import register_models

    register_models(registry)  # imports lm_eval.models first: hf, vllm, ... stay registered
    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
