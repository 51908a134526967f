"""Check a configuration completely before any work: no dataset read, nothing trained.

Every command calls these checks first, so that a misspelt split point, a bad override, a
user model that cannot be traced, a checkpoint of another network or dataset, missing data
files under an explicit ``--data-dir`` or an unwritable output folder are reported in
seconds — one line, exit 2 — instead of after the victim was trained. The checks build the
network once with fresh weights (cheap) and run it on one zero image of the dataset's
shape; they read only a checkpoint's JSON metadata and the dataset registry's file list.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from splitleak.config import AttackConfig, VictimConfig
from splitleak.data.registry import DATASETS, resolve_data_root
from splitleak.errors import CheckpointError, DatasetError, SplitleakError, unknown_name
from splitleak.models import split_model, split_points
from splitleak.models.zoo import Architecture, default_dataset, resolve_architecture


@dataclass(frozen=True)
class CheckedVictim:
    """What the checks learnt about a victim: enough to validate split points and attacks."""

    architecture: Architecture
    dataset: str
    input_shape: tuple[int, int, int]
    split_points: tuple[str, ...]
    network: nn.Module  # fresh weights: for shapes only


def check_victim(cfg: VictimConfig) -> CheckedVictim:
    """Model, dataset, input shape, user factory, data files and checkpoint."""
    dataset = cfg.dataset or default_dataset(cfg.model)
    if dataset not in DATASETS:
        raise unknown_name("dataset", dataset, sorted(DATASETS))
    spec = DATASETS[dataset]
    shape = spec.image_shape
    arch = resolve_architecture(cfg.model, dataset=dataset, input_shape=shape)
    if tuple(arch.input_shape) != shape:
        raise SplitleakError(
            f"model {arch.name} expects inputs {_shape(arch.input_shape)} but {dataset} "
            f"images are {_shape(shape)}; pick the matching --dataset (the model's own is "
            f"{arch.dataset})"
        )
    network = _build(arch, cfg.model)
    points = _trace(network, cfg.model)
    _run_once(network, shape, cfg.model, dataset)
    check_data_files(dataset, cfg.data_dir, download=cfg.download)
    if cfg.checkpoint is not None:
        check_checkpoint(cfg.checkpoint, architecture=arch.name, dataset=dataset)
    return CheckedVictim(arch, dataset, shape, tuple(points), network)


def check_split(victim: CheckedVictim, split: str) -> None:
    """A valid split point, or an error that says why not (and lists the valid ones)."""
    if split not in victim.split_points:
        split_model(victim.network, at=split)  # raises with the reason


def check_attack(
    cfg: AttackConfig, *, split: bool = True, victim: CheckedVictim | None = None
) -> CheckedVictim:
    """Everything :func:`splitleak.experiment.run_attack` needs, checked up front.

    ``split=False`` skips ``cfg.split`` (studies that sweep every split point); ``victim``
    is the result of :func:`check_victim` when the caller has it already (a study checks
    one victim for several attacks).
    """
    from splitleak.attacks.factory import attack_settings
    from splitleak.attacks.registry import get_attack

    victim = victim or check_victim(cfg.victim)
    if split:
        check_split(victim, cfg.split)
    entry = get_attack(cfg.attack)
    if split:  # per-split presets exist only for a named split point
        attack_settings(cfg, architecture=victim.architecture.name)
    if entry.needs_labels and cfg.attacker_data == "noise":
        raise SplitleakError(
            f"the {cfg.attack} attack needs labelled attacker data; noise samples have no "
            "labels (use --attacker-data same-set, same-distribution or other-distribution)"
        )
    if entry.needs_data and cfg.attacker_data == "other-distribution":
        if cfg.other_dataset not in DATASETS:
            raise unknown_name("other dataset", cfg.other_dataset, sorted(DATASETS))
        other = DATASETS[cfg.other_dataset]
        if other.image_shape != victim.input_shape:
            raise SplitleakError(
                f"--other-dataset {cfg.other_dataset} has images {_shape(other.image_shape)}, "
                f"the victim takes {_shape(victim.input_shape)}; pick a dataset of that shape"
            )
        check_data_files(cfg.other_dataset, cfg.victim.data_dir, download=cfg.victim.download)
    test_size = DATASETS[victim.dataset].test_size
    if cfg.protocol == "random" and cfg.n_eval > test_size:
        raise SplitleakError(
            f"--n-eval {cfg.n_eval}: the {victim.dataset} test set has {test_size:,} images; "
            f"evaluate at most {test_size:,}"
        )
    cfg.compute.resolve()  # an unavailable device or precision
    return victim


def check_data_files(dataset: str, data_dir: Path | None, *, download: bool) -> None:
    """Missing files under an explicit ``--data-dir`` are an error unless ``--download``.

    splitleak never writes into a folder the user named unless asked to; without
    ``--data-dir`` missing files are downloaded into the cache folder.
    """
    spec = DATASETS[dataset]
    if not spec.uses_root or data_dir is None or download:
        return
    root = resolve_data_root(data_dir)
    missing = spec.missing_files("train", root) + spec.missing_files("test", root)
    if missing:
        raise DatasetError(
            f"{spec.title}: {missing[0]} not found under --data-dir {data_dir}; point --data-dir "
            f"at the folder holding {spec.folder}/, or add --download to fetch it there"
        )


def check_checkpoint(directory: Path, *, architecture: str, dataset: str) -> None:
    """The checkpoint's metadata names this architecture and this dataset."""
    from splitleak.models.checkpoint import WEIGHTS_FILE, read_meta

    meta = read_meta(directory)
    if meta.get("architecture") != architecture:
        raise CheckpointError(
            f"checkpoint {directory} is for architecture {meta.get('architecture')!r}, "
            f"not {architecture!r}; pass the matching --model or retrain"
        )
    if meta.get("dataset") not in (None, dataset):
        raise CheckpointError(
            f"checkpoint {directory} was trained on {meta.get('dataset')!r}, not {dataset!r}; "
            f"pass --dataset {meta.get('dataset')} or a checkpoint trained on {dataset}"
        )
    if not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}; retrain")


def check_output_dir(path: Path, *, must_not_exist: bool, option: str = "--out") -> None:
    """An output folder that can be created (or reused) here; nothing is left behind.

    Refused: a path that is a file, lies under a file, is not writable, or (with
    ``must_not_exist``) already exists. Writability is probed with a temporary folder
    in the nearest existing ancestor, which is removed at once.
    """
    if path.exists() and not path.is_dir():
        raise SplitleakError(f"output {path} is a file; choose a folder with {option}")
    if path.exists() and must_not_exist:
        raise SplitleakError(f"output folder {path} already exists; choose another {option}")
    ancestor = path if path.exists() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SplitleakError(
            f"output {path} lies under the file {ancestor}; choose another {option}"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".splitleak-probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as err:
        raise SplitleakError(
            f"cannot write under {ancestor} ({err.strerror or err}); choose a writable {option}"
        ) from None


def check_output_file(path: Path, *, option: str) -> None:
    """A file a command will write at the end: not a folder, in a folder that can be written.

    An existing file is replaced (atomically, by :func:`splitleak.records.write_json` and
    friends); a missing parent folder is created then, so only its nearest existing
    ancestor has to be writable.
    """
    if path.is_dir():
        raise SplitleakError(f"{option} {path} is a folder; give a file name")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SplitleakError(f"{option} {path} lies under the file {ancestor}; give another path")
    check_output_dir(ancestor, must_not_exist=False, option=option)  # the writability probe


def _build(arch: Architecture, spec: str) -> nn.Module:
    try:
        return arch.build()
    except SplitleakError:
        raise
    except Exception as err:  # a user's factory may raise anything
        raise SplitleakError(
            f"calling the model factory {spec} failed: {type(err).__name__}: {_first(err)}; "
            "it must build the network with no arguments"
        ) from None


def _trace(network: nn.Module, spec: str) -> list[str]:
    try:
        return split_points(network)
    except SplitleakError:
        raise
    except Exception as err:  # torch.fx raises many kinds of errors on untraceable code
        raise SplitleakError(
            f"model {spec} cannot be traced by torch.fx ({type(err).__name__}: {_first(err)}); "
            "remove data-dependent control flow from forward(), or wrap it in a leaf module"
        ) from None


def _run_once(network: nn.Module, shape: tuple[int, ...], spec: str, dataset: str) -> None:
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(2, *shape))
    except Exception as err:  # shape mismatches surface as RuntimeError deep in torch
        raise SplitleakError(
            f"model {spec} does not accept {dataset} images of shape {_shape(shape)} "
            f"({type(err).__name__}: {_first(err)}); pick the matching --dataset"
        ) from None


def _first(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))
