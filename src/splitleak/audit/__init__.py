"""``splitleak audit``: the whole threat-model grid for one model, resumable, then a report.

The method, as the papers run it: train (or load) the victim; list its split points; for
each chosen split point run every attack the budget names under each attacker-data and
shadow-architecture setting; sweep the defenses at one split point, naive and
defense-aware; measure the accuracy every split and defense costs; hand the numbers to the
planner; write the report.

Modules: :mod:`.config` (the configuration and budgets), :mod:`.grid` (the cells),
:mod:`.estimate` (their cost on this machine) and :mod:`.pipeline` (running them through
an executor into a store, then the report).
"""

from __future__ import annotations

from splitleak.audit.config import AuditConfig, Budget, budget_names, load_budget
from splitleak.audit.estimate import estimate_costs
from splitleak.audit.grid import Cell, build_grid, choose_splits
from splitleak.audit.pipeline import (
    MANIFEST,
    AuditOutcome,
    assign_keys,
    check_out_dir,
    prepare,
    run_audit,
    write_manifest,
)

__all__ = [
    "MANIFEST",
    "AuditConfig",
    "AuditOutcome",
    "Budget",
    "Cell",
    "assign_keys",
    "budget_names",
    "build_grid",
    "check_out_dir",
    "choose_splits",
    "estimate_costs",
    "load_budget",
    "prepare",
    "run_audit",
    "write_manifest",
]
