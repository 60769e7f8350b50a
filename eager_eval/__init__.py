"""eager-eval: EAGer branching decoding as a generation backend for evaluation harnesses.

The core (config, entropy, controller, budget, runner, answers, metrics) imports no torch,
vLLM, lm_eval or inspect_ai; backends and integrations load those only when used.
"""

from eager_eval.core.config import EagerConfig, Mode, BranchPolicy

__all__ = ["EagerConfig", "Mode", "BranchPolicy", "__version__"]
__version__ = "0.1.0"
