"""The network registry: every stored config carries its ``arch`` and comes back through one dispatch; nothing
outside ``scalekit/mednext/`` and ``scalekit/networks/`` imports MedNeXt; a second kind is one registration
that builds, reads back, profiles and is recorded like MedNeXt."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from scalekit import networks
from scalekit.errors import ScalekitError
from scalekit.mednext import PRESETS, MedNeXtConfig, preset_config
from scalekit.networks import registry
from scalekit.records import StageRecord

ROOT = Path(__file__).resolve().parents[2] / "scalekit"

CONFIGS = [
    *(preset_config(name, kernel_size=k, deep_supervision=ds)
      for name in sorted(PRESETS) for k in (3, 5, 7) for ds in (False, True)),
    MedNeXtConfig(in_channels=2, num_classes=5, n_channels=6, exp_r=(2, 3, 4, 4, 4, 4, 4, 3, 2),
                  block_counts=(1, 2, 3, 1, 1, 1, 3, 2, 1), enc_kernel_size=5, dec_kernel_size=3, dim=2,
                  norm_type="layer", grn=True, up_alignment="aligned", checkpointing=True, do_res=False),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: json.dumps(c.to_dict(), separators=(",", ":"))[:60])
def test_every_stored_config_round_trips_through_the_registry(config: MedNeXtConfig) -> None:
    stored = json.loads(json.dumps(config.to_dict()))
    assert next(iter(stored)) == "arch" and stored["arch"] == "mednext"
    assert networks.config_from_dict(stored) == config
    assert networks.kind_of(config) is networks.MEDNEXT
    legacy = {k: v for k, v in stored.items() if k != "arch"}  # written before the registry
    assert networks.config_from_dict(legacy) == config


def test_stored_configs_come_back_from_the_table_a_checkpoint_and_a_plans_entry(tmp_path: Path) -> None:
    from scalekit.nnunet.networks import check_architecture, plans_architecture

    config = preset_config("T", kernel_size=5, deep_supervision=True, num_classes=3)
    record = StageRecord(stage_id="f1-k5", family_id="f1", n_channels=config.n_channels,
                         block_counts=list(config.block_counts), exp_r=list(config.exp_r), kernel_size=5,
                         arch=config.arch, config=config.to_dict())
    row = StageRecord.from_row(record.to_row())
    assert row.arch == "mednext" and networks.config_from_dict(row.config) == config

    model = networks.build(config)
    networks.save_checkpoint(tmp_path / "final.pt", model)
    state, stored, source = networks.load_state(tmp_path / "final.pt")
    assert (stored, source) == (config, "scalekit") and state.keys() == model.state_dict().keys()

    entry = plans_architecture(config)
    assert "arch" not in entry["arch_kwargs"]  # the class names the kind
    kind = check_architecture(entry, "plans")
    built = kind.build(config.in_channels, config.num_classes, True, **entry["arch_kwargs"])
    assert kind.arch == "mednext" and networks.config_of(built) == config


def test_an_unknown_arch_is_refused_naming_the_registered_kinds() -> None:
    with pytest.raises(ScalekitError, match=r"arch='resunet' is not a registered network kind; known: mednext, resenc"):
        networks.config_from_dict({"arch": "resunet", "n_channels": 4})
    with pytest.raises(ScalekitError, match="not a MedNeXt"):
        MedNeXtConfig.from_dict({"arch": "resunet"})
    with pytest.raises(ScalekitError, match="not a network of a registered kind"):
        networks.config_of(nn.Linear(2, 2))
    from scalekit.profiler import profile

    with pytest.raises(ScalekitError, match="a dict is not the config of a registered network kind"):
        profile(preset_config("T").to_dict(), 32, 1, device="cpu", cache=False)


def _imported_modules(path: Path) -> set[str]:
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_no_module_outside_mednext_and_the_registry_imports_mednext() -> None:
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        part = path.relative_to(ROOT).parts[0]
        if part in ("mednext", "networks"):
            continue
        hits = {m for m in _imported_modules(path) if m == "scalekit.mednext" or m.startswith("scalekit.mednext.")}
        if hits:
            offenders[str(path.relative_to(ROOT.parent))] = sorted(hits)
    assert offenders == {}
    # and the scan sees such an import where there is one
    assert "scalekit.mednext.config" in _imported_modules(ROOT / "networks" / "mednext.py")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """A second kind of network, as small as one can be: conv, ReLU, 1x1 conv."""

    in_channels: int = 1
    num_classes: int = 2
    width: int = 4
    deep_supervision: bool = False
    dim: int = 3
    checkpointing: bool = False
    arch: ClassVar[str] = "toy"

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        return cls(**{k: v for k, v in data.items() if k != "arch"})

    def replace(self, **changes: Any) -> ToyConfig:
        return dataclasses.replace(self, **changes)

    def check_input_shape(self, spatial: Any) -> None:
        if len(spatial) != self.dim:
            raise ScalekitError(f"a {self.dim}-D toy network got {len(spatial)} spatial dims")


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Conv3d(config.in_channels, config.width, 3, padding=1)
        self.head = nn.Conv3d(config.width, config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


TOY = networks.NetworkKind(
    name="toy", label="Toy", config_type=ToyConfig, build=ToyNet,
    output_strides=lambda c: [(1,) * c.dim], loss_weights=networks.recipe.deep_supervision_weights,
    make_optimizer=networks.recipe.make_optimizer,
    initialise=lambda model, state: model.load_state_dict(state), set_deep_supervision=lambda model, on: None,
    plain_path=lambda model: None, load_foreign=networks.MEDNEXT.load_foreign,
    columns=lambda c: (c.width, [1], []),
)


@pytest.fixture
def toy_kind(monkeypatch: pytest.MonkeyPatch) -> networks.NetworkKind:
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    return networks.register(TOY)


def test_a_second_kind_is_one_registration(toy_kind: networks.NetworkKind, tmp_path: Path) -> None:
    from scalekit.profiler import profile

    config = ToyConfig(width=4)
    assert networks.kinds() == ("mednext", "resenc", "toy")
    assert networks.config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = networks.build(config)
    assert isinstance(model, ToyNet) and networks.config_of(model) == config
    result = profile(config, 16, 1, amp=None, device="cpu", cache=False)
    assert result.params == networks.count_parameters(model) == 4 * 27 + 4 + 4 * 2 + 2
    # fvcore's convention: one multiply-add per weight per output voxel
    assert result.gflops_fvcore == pytest.approx(16**3 * (4 * 27 + 2 * 4) / 1e9)
    assert result.memory_method == "predicted" and result.peak_memory_bytes > 0
    networks.save_checkpoint(tmp_path / "toy.pt", model)
    assert networks.load_state(tmp_path / "toy.pt")[1] == config
    with pytest.raises(ScalekitError, match="registered already"):
        networks.register(dataclasses.replace(TOY, label="another toy"))
    with pytest.raises(ScalekitError, match=r"ToyConfig.arch must be 'toy2'"):
        networks.register(dataclasses.replace(TOY, name="toy2"))
