"""optimizer: find the fastest parallel training strategy for a transformer
on a GPU system, prove it optimal with CP-SAT, and explain when nothing fits.

    import optimizer as opt
    opt.evaluate("megatron-1T", "a100-80g", {"tp": 8, "pp": 64, "dp": 1, "batch": 512})
"""

from .errors import ConfigError, InfeasibleStrategy, OptimizerError
from .evaluate import Report, evaluate
from .spec import (Model, Strategy, System, load_model, load_strategy, load_system,
                   preset_names)
from .validate import validate
from .search import PlanResult, plan

__all__ = ["ConfigError", "InfeasibleStrategy", "OptimizerError", "Report", "evaluate",
           "Model", "Strategy", "System", "load_model", "load_strategy", "load_system",
           "preset_names", "validate", "plan", "PlanResult"]
__version__ = "0.1.0"
