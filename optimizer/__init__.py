"""optimizer: find the fastest parallel training strategy for a transformer
on a GPU system, prove it optimal with CP-SAT, and explain when nothing fits.

    import optimizer as opt
    opt.evaluate("megatron-1T", "a100-80g", {"tp": 8, "pp": 64, "dp": 1, "batch": 512})
    opt.plan("1T", "h100-80g-nvl8", 16384)
    opt.sweep({"models": ["1T", "4T"], "gpus": [4096, 8192]}, executor="local")
"""

from .errors import ConfigError, InfeasibleStrategy, OptimizerError
from .evaluate import Report, evaluate
from .spec import (Model, Strategy, System, default_datatype, load_model, load_strategy, load_system,
                   preset_names)
from .validate import validate
from .search import PlanResult, plan
from .sweep import SweepResult, load_grid, sweep

__all__ = ["ConfigError", "InfeasibleStrategy", "OptimizerError", "Report", "evaluate",
           "Model", "Strategy", "System", "default_datatype", "load_model", "load_strategy", "load_system",
           "preset_names", "validate", "plan", "PlanResult", "sweep", "SweepResult", "load_grid"]
__version__ = "0.1.0"
