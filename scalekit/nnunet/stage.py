"""One training stage of a study: train a MedNeXt inside nnU-Net v2, optionally UpKern-initialised from the
parent stage, checkpoint every epoch, then score the fold's validation cases.

The study engine runs :func:`train_stage` in a worker process; it sets nnU-Net's environment variables for
that process. Layout of ``output_dir``::

    request.json            what was asked (a resumed stage must ask the same)
    nnunet/                 nnUNet_results: nnU-Net's logs and checkpoint_latest.pth / checkpoint_final.pth
    final.pt                scalekit checkpoint of the trained network (UpKern source of the next stage)
    outcome.json            the StageOutcome
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from scalekit._atomic import write_atomic
from scalekit.errors import ScalekitError
from scalekit.faults import fault_point
from scalekit import networks
from scalekit.networks import NetworkConfig, load_state, recipe, save_checkpoint

from . import _env
from .evaluate import evaluate_fold
from .plans import TrainerSettings, mednext_configuration, plans_with
from .dataset import PreparedDataset, file_digest

log = logging.getLogger(__name__)

STAGE_CONFIGURATION = "scalekit_stage"
FINAL_CHECKPOINT = "final.pt"


@dataclass(frozen=True)
class StageRequest:
    """What one stage trains.

    Attributes:
        prepared: the dataset from :func:`~scalekit.nnunet.prepare_dataset`.
        fold: cross-validation fold (0..4 for five or more cases).
        arch: the MedNeXt; ``in_channels`` / ``num_classes`` must match the dataset; deep supervision is
            always trained (nnU-Net sets it).
        epochs, iterations_per_epoch, val_iterations: schedule (the poly decay runs over ``epochs``).
        train_until: stop after this many epochs (a rung of successive halving) and score the network there;
            ``None``: all ``epochs``. The schedule still runs over ``epochs``, so a stage trained in several
            sessions follows the schedule of one trained straight through; a later request with a larger
            ``train_until`` continues from the checkpoint.
        evaluate_at: epochs (besides the last) after which the validation cases are scored too: the stage's
            Dice curve (``StageOutcome.dice_curve``).
        initial_lr: AdamW learning rate.
        init_from: scalekit checkpoint of the parent stage to initialise from with UpKern (e.g. its ``final.pt``).
        output_dir: this stage's folder.
        resume: continue from the last epoch checkpoint in ``output_dir`` if there is one (else start fresh);
            without ``resume`` an existing stage in ``output_dir`` is replaced.
        amp: ``None`` / ``"none"`` (fp32), ``"auto"`` (fp16 on CUDA, fp32 on CPU), ``"fp16"``, ``"bf16"``.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        seed: seeds Python, numpy and torch before training.
        nsd_tolerance_mm: surface Dice tolerance.
        mirror_tta: mirroring test-time augmentation for the validation metrics (slower, as in the paper).
        batch_size: training batch size; ``None`` keeps nnU-Net's planned one.
    """

    prepared: PreparedDataset
    fold: int
    arch: NetworkConfig
    epochs: int
    iterations_per_epoch: int
    output_dir: Path
    val_iterations: int = recipe.VAL_ITERATIONS
    initial_lr: float = recipe.INITIAL_LR
    init_from: Path | None = None
    resume: bool = False
    amp: str | None = "auto"
    device: str = "auto"
    seed: int = 0
    nsd_tolerance_mm: float = 1.0
    mirror_tta: bool = False
    batch_size: int | None = None
    train_until: int | None = None
    evaluate_at: tuple[int, ...] = ()

    @property
    def target_epochs(self) -> int:
        """The epoch count this request trains to."""
        return self.epochs if self.train_until is None else self.train_until

    def settings(self) -> TrainerSettings:
        return TrainerSettings(num_epochs=self.epochs, iterations_per_epoch=self.iterations_per_epoch,
                               val_iterations=self.val_iterations, initial_lr=self.initial_lr, amp=self.amp,
                               checkpoint_every=1, plot_progress=False)

    def identity(self) -> dict[str, Any]:
        """Everything that changes the trained network (compared when resuming). The UpKern source counts by
        its content, not its path, so a moved study resumes and a retrained parent restarts its child."""
        return {
            "dataset": self.prepared.dataset_name, "configuration": self.prepared.configuration,
            "patch_size": list(self.prepared.patch_size), "fold": self.fold, "arch": self.arch.to_dict(),
            "settings": self.settings().to_dict(),
            "init_from_sha256": file_digest(self.init_from) if self.init_from else None,
            "seed": self.seed, "batch_size": self.batch_size,
        }


@dataclass
class StageOutcome:
    """Result of a stage. Per-class lists follow the foreground classes in label order (``class_names``)."""

    mean_dice: float
    per_class_dice: list[float]
    mean_nsd: float
    per_class_nsd: list[float]
    nsd_tolerance_mm: float
    checkpoint: Path
    first_train_loss: float
    last_train_loss: float
    epochs_run: int
    epochs_total: int
    wall_time_s: float
    class_names: list[str] = field(default_factory=list)
    validation_cases: list[str] = field(default_factory=list)
    upkern: dict[str, Any] | None = None
    case_dice: list[float] = field(default_factory=list)
    """Each validation case's mean foreground Dice, at the last evaluation."""
    dice_curve: dict[str, float] = field(default_factory=dict)
    """Mean Dice after each scored epoch (keys: epoch counts), over every session of the stage."""
    case_curve: dict[str, list[float]] = field(default_factory=dict)
    """Each validation case's mean Dice after each scored epoch (keys as ``dice_curve``; cases in
    ``validation_cases`` order): the noise of each point of the curve."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checkpoint"] = str(self.checkpoint)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageOutcome:
        return cls(**{**data, "checkpoint": Path(data["checkpoint"])})


class StageMismatchError(ScalekitError):
    """A stage folder holds a stage that was started with a different request."""


def _check_request(request: StageRequest) -> torch.device:
    request.settings()  # validates the schedule
    if not 1 <= request.target_epochs <= request.epochs:
        raise ScalekitError(f"train_until={request.train_until} must lie in 1..epochs ({request.epochs})")
    device = recipe.resolve_device(request.device)
    recipe.resolve_amp(request.amp, device)
    if request.init_from is not None and not Path(request.init_from).is_file():
        raise ScalekitError(f"init_from checkpoint {request.init_from} does not exist")
    if request.nsd_tolerance_mm < 0:
        raise ScalekitError(f"nsd_tolerance_mm must be >= 0, got {request.nsd_tolerance_mm}")
    return device


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _prepare_output(request: StageRequest) -> bool:
    """Write request.json; return whether an earlier run of the same stage can be continued."""
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    request_file = out / "request.json"
    identity = request.identity()
    if request.resume and request_file.is_file():
        previous = json.loads(request_file.read_text())
        if isinstance(previous.get("arch"), dict):  # written before configs carried their kind
            previous["arch"] = {"arch": networks.DEFAULT_ARCH, **previous["arch"]}
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise StageMismatchError(
                f"cannot resume the stage in {out}: it was started with different {changed}; "
                "use another output_dir or resume=False to start over"
            )
        return True
    for stale in ("nnunet", FINAL_CHECKPOINT, "outcome.json"):
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    request_file.write_text(json.dumps(identity, indent=2) + "\n")
    fault_point("stage-request", out.name)
    return False


def train_stage(request: StageRequest, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> StageOutcome:
    """Train one stage and score it; see :class:`StageRequest` and the module docstring.

    ``on_epoch`` receives after every epoch a dict with ``epoch``, ``train_loss``, ``val_loss``,
    ``ema_fg_dice``, ``mean_fg_dice``, ``lr``, ``epoch_seconds`` and ``elapsed_seconds``.

    Raises:
        ValueError: a request that does not fit the dataset, before any training.
        PreparedDataChangedError: a preprocessed file changed since scalekit prepared it (nnU-Net would
            unpickle it), before any training.
        NonFiniteLossError: at the first NaN/inf training loss.
        torch.OutOfMemoryError: unchanged from PyTorch.
    """
    started = time.monotonic()
    device = _check_request(request)
    prepared = request.prepared
    prepared.verify_files()  # nnU-Net unpickles them: refuse files that changed since scalekit made them
    configuration = mednext_configuration(prepared, request.arch, request.settings(), request.batch_size)
    out = Path(request.output_dir).resolve()
    continuing = _prepare_output(request)
    recorded = _recorded_outcome(out) if continuing else None
    if recorded is not None and recorded.epochs_total >= request.target_epochs:
        log.info("stage in %s has trained %d epoch(s); returning its recorded outcome", out, recorded.epochs_total)
        return recorded
    _env.configure(raw=prepared.raw_dir.parent, preprocessed=prepared.preprocessed_root, results=out / "nnunet")
    from .trainer import ScalekitMedNeXtTrainer

    plans = plans_with(prepared, {STAGE_CONFIGURATION: configuration})
    _seed(request.seed)
    with _env.nnunet_output_to_log():
        trainer = ScalekitMedNeXtTrainer(
            plans={**plans, "continue_training": continuing}, configuration=STAGE_CONFIGURATION,
            fold=request.fold, dataset_json=prepared.load_dataset_json(), device=device,
        )
        trainer.initialize()
    fold_dir = Path(trainer.output_folder)
    report = _initialise(trainer, request, fold_dir, continuing)
    epochs_before = trainer.current_epoch
    trainer.num_epochs = request.target_epochs  # the schedule was built over request.epochs by initialize()

    def score() -> Any:
        return evaluate_fold(prepared, plans, STAGE_CONFIGURATION, trainer.bare_network(), request.fold, device,
                             request.nsd_tolerance_mm, request.mirror_tta)

    curve = dict(recorded.dice_curve) if recorded is not None else {}
    cases = dict(recorded.case_curve) if recorded is not None else {}
    trainer.epoch_callback = _reporter(on_epoch, sys.stdout, trainer.num_epochs, out.name,
                                       _curve_scorer(trainer, score, request.evaluate_at, curve, cases))
    try:
        if epochs_before < trainer.num_epochs:
            with _env.nnunet_output_to_log():
                trainer.run_training()
    finally:
        trainer.shutdown_dataloaders()
    network = trainer.bare_network()
    checkpoint = save_checkpoint(out / FINAL_CHECKPOINT, network, stage=request.identity(), upkern=report)
    metrics = score()
    losses = [float(v) for v in trainer.logger.get_value("train_losses", step=None)]
    curve[str(len(losses))] = metrics.mean_dice
    cases[str(len(losses))] = list(metrics.case_dice)
    outcome = StageOutcome(
        mean_dice=metrics.mean_dice, per_class_dice=list(metrics.per_class_dice),
        mean_nsd=metrics.mean_nsd, per_class_nsd=list(metrics.per_class_nsd),
        nsd_tolerance_mm=metrics.tolerance_mm, checkpoint=checkpoint,
        first_train_loss=losses[0], last_train_loss=losses[-1],
        epochs_run=trainer.num_epochs - epochs_before, epochs_total=len(losses),
        wall_time_s=time.monotonic() - started + (recorded.wall_time_s if recorded is not None else 0.0),
        class_names=list(prepared.label_names[1:]),
        validation_cases=list(metrics.cases), upkern=report, case_dice=list(metrics.case_dice), dice_curve=curve,
        case_curve=cases,
    )
    write_atomic(out / "outcome.json", json.dumps(outcome.to_dict(), indent=2) + "\n")
    log.info("stage %s: dice %.4f, nsd %.4f, %d epoch(s) in %.1f s", out.name, outcome.mean_dice,
             outcome.mean_nsd, outcome.epochs_run, outcome.wall_time_s)
    return outcome


def _initialise(trainer: Any, request: StageRequest, fold_dir: Path, continuing: bool) -> dict[str, Any] | None:
    """Start the network from what is on disk, never from a report alone: the stage's own last checkpoint when
    it has one, else the parent's weights resampled by UpKern (when ``init_from`` is set), else nnU-Net's
    random initialisation. Returns the UpKern report of a stage that started from UpKern, or None.
    """
    report_file = Path(request.output_dir) / "upkern.json"
    if continuing:
        # Latest first: a session that continues past a rung writes it over the rung's final checkpoint.
        for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
            if (fold_dir / name).is_file():
                log.info("continuing from %s", fold_dir / name)
                trainer.load_checkpoint(fold_dir / name)
                if request.init_from is not None and report_file.is_file():
                    return json.loads(report_file.read_text())
                return None
    if request.init_from is None:
        return None
    state, config, kind = load_state(request.init_from)
    result = networks.initialise(trainer.bare_network(), state)
    report = {"source": str(request.init_from), "source_kind": kind, "source_config": config.to_dict(),
              "summary": result.summary(), **result.to_dict()}
    report_file.write_text(json.dumps(report, indent=2) + "\n")
    log.info("UpKern from %s: %s", request.init_from, result.summary())
    return report


def _recorded_outcome(out: Path) -> StageOutcome | None:
    """The outcome of the stage's last session in ``out``, when its weights are there too."""
    if not ((out / "outcome.json").is_file() and (out / FINAL_CHECKPOINT).is_file()):
        return None
    recorded = StageOutcome.from_dict(json.loads((out / "outcome.json").read_text()))
    return dataclasses.replace(recorded, checkpoint=out / FINAL_CHECKPOINT)


def _curve_scorer(
    trainer: Any, score: Callable[[], Any], evaluate_at: tuple[int, ...], curve: dict[str, float],
    cases: dict[str, list[float]],
) -> Callable[[int], None]:
    """Score the network after the epochs in ``evaluate_at`` (not the last: the stage scores that anyway) into
    ``curve`` (the mean) and ``cases`` (each case), then put it back into training (deep supervision on, train
    mode)."""

    def after_epoch(epochs_done: int) -> None:
        if epochs_done in evaluate_at and epochs_done < trainer.num_epochs:
            metrics = score()
            curve[str(epochs_done)] = metrics.mean_dice
            cases[str(epochs_done)] = list(metrics.case_dice)
            trainer.set_deep_supervision_enabled(True)
            trainer.network.train()

    return after_epoch


def _reporter(
    on_epoch: Callable[[dict[str, Any]], None] | None, stdout: TextIO, num_epochs: int, where: str,
    after_epoch: Callable[[int], None] = lambda epochs_done: None,
) -> Callable[[dict[str, Any]], None]:
    """The trainer's epoch callback: log, score where asked, then call ``on_epoch`` with the caller's stdout
    (not nnU-Net's log)."""

    def report(metrics: dict[str, Any]) -> None:
        log.info("epoch %d: train loss %.4f, val loss %.4f, pseudo dice %.4f", metrics["epoch"],
                 metrics["train_loss"], metrics["val_loss"], metrics["mean_fg_dice"])
        after_epoch(metrics["epoch"] + 1)
        if on_epoch is not None:
            with contextlib.redirect_stdout(stdout):
                on_epoch(metrics)
        if metrics["epoch"] + 1 < num_epochs:
            fault_point("stage-epoch", where)

    return report
