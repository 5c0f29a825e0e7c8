"""External distillation (METHOD.md eqs 1-7): modes, LS, LW and the Student Adapter.

GS (eq. 5) is a layer-level autograd function: ``exfm.models.gradient_scaling``.
"""

from exfm.distill.losses import bce, distillation_loss, scale_label
from exfm.distill.student_adapter import (StudentAdapter, prob_logit, sa_context, sa_shape,
                                          student_adapter_step)

__all__ = ["bce", "distillation_loss", "scale_label",
           "StudentAdapter", "prob_logit", "sa_context", "sa_shape", "student_adapter_step"]
