"""nnU-Net v2 integration: the only part of scalekit that imports nnunetv2.

    from scalekit.nnunet import make_demo_dataset, prepare_dataset, StageRequest, train_stage, export_to_nnunet

- :func:`make_demo_dataset`: a synthetic multi-organ dataset in nnU-Net raw format.
- :func:`prepare_dataset`: validate a raw dataset (every bad case in one error), then nnU-Net's fingerprint,
  planning and preprocessing; idempotent.
- :func:`train_stage`: one study stage (a MedNeXt or a ResEnc in nnU-Net's training loop, UpKern start,
  per-epoch checkpoints and callbacks, Dice and surface Dice on the fold's validation cases).
- :func:`export_to_nnunet`: plans, trainer and starting weights for stock ``nnUNetv2_train`` (a ResEnc: nnU-Net's
  own plans and ``nnUNetTrainer``, and a trained-model folder nnU-Net's predictor loads).
- :func:`~scalekit.nnunet.resenc.plan_resenc`: nnU-Net's ResEnc presets for a prepared dataset.
- :func:`predict` with :func:`stage_model` or :func:`export_model`: segment images with a trained stage or an
  export, through nnU-Net's predictor set up directly (no trainer lookup by name).

nnunetv2 itself is imported only inside these functions, after nnU-Net's environment variables are set.
"""

from .demo import LABELS as DEMO_LABELS
from .demo import make_demo_dataset
from .errors import NonFiniteLossError
from .export import ExportResult, export_to_nnunet, run_exported_training
from .plans import TRAINER_NAME, TrainerSettings
from .predict import TrainedModel, export_model, predict, stage_model
from .dataset import PreparedDataChangedError, PreparedDataset
from .prepare import prepare_dataset
from .stage import StageMismatchError, StageOutcome, StageRequest, train_stage
from .validate import DatasetValidationError, validate_raw_dataset

__all__ = [
    "DEMO_LABELS",
    "TRAINER_NAME",
    "DatasetValidationError",
    "ExportResult",
    "NonFiniteLossError",
    "PreparedDataChangedError",
    "PreparedDataset",
    "StageOutcome",
    "StageMismatchError",
    "StageRequest",
    "TrainedModel",
    "TrainerSettings",
    "export_model",
    "export_to_nnunet",
    "make_demo_dataset",
    "predict",
    "prepare_dataset",
    "run_exported_training",
    "stage_model",
    "train_stage",
    "validate_raw_dataset",
]
