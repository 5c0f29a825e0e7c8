"""External distillation (METHOD.md eqs 1-7): modes, GS, LS, LW and the Student Adapter."""

from exfm.distill.gradient_scaling import GradientScale, scale_gradient
from exfm.distill.losses import MODES, bce, distillation_loss, scale_label
from exfm.distill.student_adapter import StudentAdapter, prob_logit, student_adapter_step

__all__ = ["GradientScale", "scale_gradient", "MODES", "bce", "distillation_loss", "scale_label",
           "StudentAdapter", "prob_logit", "student_adapter_step"]
