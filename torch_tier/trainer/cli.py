"""`torch-tier train MODEL ...` (search a placement) and `torch-tier worker --connect ADDR` (time placements)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import devices
from .. import comparison
from ..report import add_model_arguments, build_workload, capture_workload, fail, table
from . import wire
from .config import TrainConfig
from .erl import train
from .workers import ModelSpec, RemoteWorkers, Worker, load_given_model

_KEY_FILE = "$TORCH_TIER_CACHE/worker.key, else ~/.cache/torch-tier/worker.key"
_STARTS = {"optimal": "optimal", "optimal-split": "optimal (split)"}  # --start: the baseline of each choice

_DESCRIPTION = """Search the fastest placement of MODEL's weights and activations within a DRAM
budget, by evolutionary RL (Boltzmann chromosomes + a GNN soft actor-critic), and
write it as a policy file, with a PNG of the training curve next to it and a table
against the baselines on stdout. Checkpoints after every generation (OUT.ckpt by
default); Ctrl-C saves the best policy so far, --resume continues."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `train` and `worker`; each sets `func` to its handler (returns an exit code)."""
    parser = subparsers.add_parser("train", help="search a placement policy by evolutionary RL",
                                   description=_DESCRIPTION)
    add_model_arguments(parser)
    parser.add_argument("--budget", default="25%", help="DRAM budget: bytes, '512MiB', or '25%%' of the all-DRAM "
                                                        "footprint (default 25%%)")
    parser.add_argument("--pm", default="sim:optane-100",
                        help="the slow tier runs use: sim:PROFILE, sim:MODEL (a device model), sim:PATH.json, "
                             "numa:NODE, memkind:DIR, kmem (default sim:optane-100)")
    parser.add_argument("--assume", metavar="PROFILE",
                        help="the device profile the model-based parts assume (seeding, greedy and optimal, "
                             "predictions); default the sim's profile, else optane-100")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT.json", help="policy file to write")
    parser.add_argument("--fitness", choices=("model", "measured"), default="model",
                        help="cost-model prediction or timed inference (default model)")
    parser.add_argument("--evaluations", type=int, default=2000, metavar="N", help="evaluation budget (default 2000)")
    parser.add_argument("--population", type=int, default=20, metavar="N", help="population size (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--start", choices=tuple(_STARTS),
                        help="start from this placement of the assumed profile, timed first as the first "
                             "incumbent: the exact optimum, or the optimum that may split tensors between "
                             "the tiers (the search itself tries whole-tensor placements against it)")
    parser.add_argument("--no-baseline-seeds", action="store_true",
                        help="start from random chromosomes only, not from the baselines")
    parser.add_argument("--workers", default="1", metavar="N|tcp://HOST:PORT",
                        help="measured fitness: local worker processes, or an address to bind for "
                             "'torch-tier worker --connect' workers, which build MODEL themselves (default 1)")
    parser.add_argument("--secret", type=Path, metavar="FILE",
                        help=f"remote workers: the shared secret's key file, created (mode 0600) if missing "
                             f"(default {_KEY_FILE})")
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT", help="checkpoint file (default OUT.ckpt)")
    parser.add_argument("--resume", type=Path, metavar="CKPT", help="continue the run saved in CKPT")
    parser.add_argument("--rounds", type=int, default=5, metavar="N",
                        help="measured fitness: side-by-side rounds of the final comparison (default 5)")
    parser.set_defaults(func=run)

    worker = subparsers.add_parser("worker", help="time placements sent by a trainer",
                                   description="Connect to a trainer and time the placements it sends.")
    worker.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="the trainer's address")
    worker.add_argument("--secret", type=Path, metavar="FILE",
                        help=f"the trainer's key file, a copy readable by this user only (default {_KEY_FILE}, "
                             f"where a trainer on this machine and account creates it)")
    worker.add_argument("--allow-model", action="append", default=[], metavar="MODULE:FUNCTION",
                        help="build this model function too when a trainer names it, spelled as the trainer's "
                             "MODEL (zoo models always are); repeatable")
    worker.add_argument("--model-file", type=Path, metavar="FILE",
                        help="time this saved (model, inputs) instead of building the trainer's MODEL: set by the "
                             "trainer for the local workers it starts (a file of this user's only)")
    worker.add_argument("--parent", type=int, metavar="PID",
                        help="exit when process PID, the trainer that started this worker, is gone")
    worker.add_argument("--device", action="append", default=[], metavar="NAME=MODULE:FUNCTION",
                        help="register a device model before serving, so that pm='sim:NAME' emulates it "
                             "(repeatable)")
    worker.set_defaults(func=run_worker)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train, then write the policy, its plot and the comparison table."""
    try:
        workers = _workers(args)
        workload = build_workload(args)
    except (ValueError, TypeError) as err:
        return fail("train", err)
    checkpoint = args.resume or args.checkpoint or args.out.with_suffix(".ckpt")
    graph = None if args.resume else capture_workload(workload, args)
    try:
        result = train(workload.model, workload.inputs, dram_budget=args.budget, pm=args.pm, fitness=args.fitness,
                       evaluations=args.evaluations, population=args.population, seed=args.seed, workers=workers,
                       checkpoint=checkpoint, resume=args.resume is not None,
                       seed_baselines=not args.no_baseline_seeds, graph=graph, compare_rounds=args.rounds,
                       device=args.assume, config=TrainConfig(clock=args.clock),
                       start=_STARTS[args.start] if args.start else None)
    except ValueError as err:  # a budget that cannot be read or met, a checkpoint of another model, a bad key file
        return fail("train", err)
    except RuntimeError as err:  # no worker connected, every local worker exited, a task failed on every try
        print(f"torch-tier train: {err}", file=sys.stderr)
        return 1
    meta = result.policy.metadata
    rows = result.comparison or comparison.compare(  # interrupted: predicted only
        result.graph, comparison.placements(result.graph, meta["dram_budget"], meta["device"], result.policy,
                                            split=True),
        meta["dram_budget"], meta["device"])
    meta.update(model=args.model, size=dict(args.size), generate=args.generate,
                comparison={r.name: _figures(r) for r in rows})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.policy.save(args.out)
    plot = args.out.with_suffix(".png")
    result.save_plot(plot, {r.name: r.measured or r.predicted for r in rows if r.name in ("greedy", "first-touch")})
    print(table(rows, against="optimal"))
    print(f"\npolicy: {args.out}  curve: {plot}  checkpoint: {checkpoint}")
    if result.interrupted:
        print(f"interrupted: continue with --resume {checkpoint}", file=sys.stderr)
        return 130
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Serve a trainer until it says stop."""
    logging.basicConfig(level=logging.INFO, format="torch-tier worker: %(message)s")
    for spec in args.device:
        name, sep, reference = spec.partition("=")
        if not sep or ":" not in reference:
            return fail("worker", ValueError(f"--device {spec!r}: expected NAME=MODULE:FUNCTION"))
        try:
            devices.register_device(name, devices.resolve_reference(reference))
        except (ValueError, TypeError) as err:
            return fail("worker", err)
    try:
        secret = wire.read_secret(args.secret or wire.key_path())
        model = load_given_model(args.model_file) if args.model_file else None
        worker = Worker(args.connect, secret, args.allow_model, model, args.parent)
    except (ValueError, OSError) as err:
        return fail("worker", err)
    try:
        worker.serve()
    except KeyboardInterrupt:
        return 130
    finally:
        worker.close()
    return 0


def _workers(args: argparse.Namespace) -> int | RemoteWorkers:
    """--workers: a positive number of local workers, or the address remote ones connect to
    (the shared secret created now if there is none)."""
    if args.workers.isdigit():
        if int(args.workers) < 1:
            raise ValueError("--workers: at least 1 local worker, or an address such as tcp://0.0.0.0:5555")
        return int(args.workers)
    wire.trainer_secret(args.secret)  # now, before the capture: a worker started meanwhile finds it
    return RemoteWorkers(args.workers, ModelSpec(args.model, dict(args.size)), args.secret)


def _figures(row: comparison.Row) -> dict[str, float | None]:
    return {"predicted": row.predicted, "measured": row.measured, "dram_bytes": row.dram_bytes}
