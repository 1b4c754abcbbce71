"""gpgrl: Group Policy Gradient (GPG) and its baselines for RL fine-tuning of language and vision-language models.

The Python API (`gpgrl.api`): `load_config`, `train`, `evaluate`, and `ConfigError` for a bad config or input.
"""

from gpgrl.api import evaluate, train
from gpgrl.config import ConfigError, load_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "evaluate", "load_config", "train"]
