"""One-pass streaming training, evaluation, metrics and checkpoints (no services needed)."""

from exfm.train.checkpoint import load_checkpoint, save_checkpoint
from exfm.train.metrics import all_metrics, auc, calibration, logloss, normalized_entropy
from exfm.train.trainer import (TrainResult, evaluate, predict_tensors, resolve_mode,
                                train_fm_day, train_vm_day)

__all__ = ["load_checkpoint", "save_checkpoint", "all_metrics", "auc", "calibration", "logloss",
           "normalized_entropy", "TrainResult", "evaluate", "predict_tensors", "resolve_mode",
           "train_fm_day", "train_vm_day"]
