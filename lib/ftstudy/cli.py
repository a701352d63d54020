"""`ftstudy` command line: run a grid, build the report, plan, export, verify, validate params."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import ftstudy  # noqa: F401  (thread settings before torch)
    from ftstudy.config import params as params_mod

    ap = argparse.ArgumentParser(prog="ftstudy", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute every pending cell of a params file")
    r.add_argument("params")
    r.add_argument("--dry-run", action="store_true",
                   help="list the cells, which are done, and the estimated wall time of the rest")
    r.add_argument("--calibrate", action="store_true",
                   help="measure this machine first (a few minutes, cached), so that cells of a shape "
                        "that never ran here get an estimate")
    r.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    r.add_argument("--rerun-stale", action="store_true",
                   help="rerun finished cells whose fingerprint (data, packages, tasks, code) changed")
    from ftstudy.run.executors import REGISTRY

    r.add_argument("--executor", choices=sorted(REGISTRY),
                   help="where cells run (default: the params file's executor.kind, else local)")
    r.add_argument("--partition", help="Slurm partition (overrides executor.slurm.partition)")
    r.add_argument("--time-min", type=int, help="Slurm time limit per cell, minutes")
    r.add_argument("--gpus", type=int, dest="gpus_per_node", help="GPUs per cell job")
    r.add_argument("--cpus", type=int, dest="cpus_per_task", help="CPUs per cell job")
    r.add_argument("--mem-gb", type=float, help="memory per cell job, GB")
    b = sub.add_parser("report", help="collect results, execute the analysis, build the book")
    b.add_argument("params")
    b.add_argument("--no-book", action="store_true", help="tables and analysis only")
    b.add_argument("--results", help="read the runs from this folder (e.g. committed results/<study>) "
                                     "instead of the params file's output_dir")
    b.add_argument("--readme", help="also refresh this README's generated answers block "
                                    "(<!-- answers:<study> --> ... <!-- /answers:<study> -->)")
    b.add_argument("--allow-fewer-runs", action="store_true",
                   help="let --readme rewrite answers that were written from more finished runs than there are now")
    e = sub.add_parser("export", help="copy a finished grid's records (no weights) into a folder to commit")
    e.add_argument("params")
    e.add_argument("--to", required=True, help="destination folder, e.g. results/<study>")
    e.add_argument("--replace", action="store_true",
                   help="also delete runs already in the destination that this grid does not produce")
    pl = sub.add_parser("plan", help="items and seeds needed to detect a given change (power), from finished results")
    pl.add_argument("params")
    pl.add_argument("--results", help="the pilot's or committed study's results folder (default: params output_dir)")
    pl.add_argument("--change", action="append", default=[], metavar="TASK=SIZE",
                    help="the change to detect, per task or metric (e.g. hellaswag=0.05, bits_per_byte=0.02)")
    pl.add_argument("--max-seeds", type=int, default=10)
    v = sub.add_parser("validate", help="check params files without computing anything")
    v.add_argument("params", nargs="+")
    vf = sub.add_parser("verify", help="rerun a few runs of committed results here and compare with their records")
    vf.add_argument("results", help="a results folder, e.g. results/cpu-study")
    vf.add_argument("--runs", type=int, default=3,
                    help="how many runs: a reference, the cheapest trained run, the rest drawn at random (default 3)")
    vf.add_argument("--run", action="append", default=[], metavar="ID", help="verify these runs instead")
    vf.add_argument("--seed", type=int, help="the draw's seed (printed when not given)")
    vf.add_argument("--params", help="the params file (default: the one the results' README names)")
    vf.add_argument("--scratch", help="where the reruns go (default: a new temporary folder)")
    vf.add_argument("--dtype", choices=["float32", "bfloat16"],
                    help="train in this dtype instead of the recorded one (differences are then reported, not judged)")
    vf.add_argument("--threads", type=int, help="torch threads of the reruns (default: as each record ran)")
    vf.add_argument("--own-kernels", action="store_true",
                    help="compute with this CPU's own kernels even where it can run those a record was made with")
    args = ap.parse_args(argv)

    if args.command == "verify":
        from ftstudy import verify
        return verify.verify(args.results, args.params, args.runs, args.run, args.seed, args.scratch,
                             args.dtype, args.threads, args.own_kernels)

    try:
        if args.command == "validate":
            for p in args.params:
                params_mod.load(p)
                print(f"{p}: ok")
            return 0
        # report and export read finished runs: how this machine would compute is not asked
        params = params_mod.load(args.params, for_compute=args.command == "run")
    except params_mod.ParamsError as e:
        print(e, file=sys.stderr)
        return 2

    if args.command == "run":
        from ftstudy.run import executors
        from ftstudy.planning import grid
        overrides = {k: v for k in ("partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb")
                     if (v := getattr(args, k)) is not None}
        if args.calibrate:
            from ftstudy.planning import calibrate
            from ftstudy.compute import paths
            calibrate.measure(params, paths.data_dir(params.data_dir))
        try:
            states = grid.run(params, retry_failed=args.retry_failed, dry_run=args.dry_run,
                              executor=args.executor, slurm_options=overrides,
                              rerun_stale=args.rerun_stale)
        except executors.Unavailable as e:
            print(f"{args.params}: {e}", file=sys.stderr)
            return 2
        failed = [rid for rid, s in states.items() if s == "failed"]
        if failed and not args.dry_run:
            print(f"{len(failed)} cell(s) failed: {', '.join(failed)} "
                  f"(see outputs/runs/<id>/status.json; rerun with --retry-failed)", file=sys.stderr)
            return 1
        return 0
    if args.command == "report":
        from ftstudy.record import records
        from ftstudy.book import report
        try:
            report.build(params, book=not args.no_book, results_dir=args.results, readme=args.readme,
                         allow_fewer_runs=args.allow_fewer_runs)
        except (report.Refused, records.RecordError) as err:  # refused before anything was written
            print(f"{args.params}: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "plan":
        from pathlib import Path

        from ftstudy.compute import paths
        from ftstudy.analysis import power
        try:
            changes = {k: float(v) for k, v in (c.split("=", 1) for c in args.change)}
        except ValueError:
            print(f"--change takes TASK=SIZE, e.g. hellaswag=0.05; got {args.change}", file=sys.stderr)
            return 2
        results = Path(args.results or params.output_dir)
        if not (results / "aggregated.csv").is_file():
            print(f"{results}: no aggregated.csv (run `ftstudy report {args.params}` first)", file=sys.stderr)
            return 2
        try:
            print(power.report(params, results, changes, args.max_seeds, paths.data_dir(params.data_dir)))
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        return 0
    if args.command == "export":
        from pathlib import Path

        from ftstudy.record import export
        from ftstudy.planning import grid
        outputs = Path(params.output_dir).resolve()
        cells, waiting = grid.plan(params, outputs)
        if waiting:
            print(f"{args.params}: {len(waiting)} study run(s) still wait for their learning-rate trials", file=sys.stderr)
            return 2
        try:
            done = export.export(outputs, cells, args.to, args.params, replace=args.replace)
        except ValueError as err:
            print(f"{args.params}: {err}", file=sys.stderr)
            return 2
        print(f"exported {done['runs']} runs to {args.to} ({done['bytes'] / 1e6:.1f} MB)")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
