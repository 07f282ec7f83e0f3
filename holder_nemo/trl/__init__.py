"""HölderPO for Hugging Face TRL (``pip install 'holder_nemo[trl]'``, trl==1.16.0).

``HolderPOTrainer`` is TRL's ``GRPOTrainer`` with ``_compute_loss`` replaced (the extension point TRL's own
experimental GMPO trainer uses); ``HolderPOConfig`` is ``GRPOConfig`` plus the ``holder_*`` fields. Importing this
package does not import TRL: the names resolve on first access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HolderPOConfig", "HolderPOTrainer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from holder_nemo.trl import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
