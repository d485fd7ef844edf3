"""The `curate` command: run, validate, report and build the demo corpus."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from curation.storage import out_path


def _cmd_validate(args) -> int:
    from curation.spec import load_spec

    spec = load_spec(args.spec, check_files=not args.no_files)
    names = ", ".join(s.name for s in spec.sources)
    stages = [name for name, cfg in spec.stages if cfg is not None]
    print(f"{args.spec}: OK — {len(spec.sources)} sources ({names}); "
          f"stages: {', '.join(stages) or 'none'}; sha256 {spec.hash()[:16]}")
    return 0


def _cmd_run(args) -> int:
    from curation.cluster import dask_client, stop_on_first_interrupt
    from curation.pipeline import run_pipeline
    from curation.report import summary_text, write_report
    from curation.run_lock import FolderLock
    from curation.spec import load_spec

    spec = load_spec(args.spec)
    out = out_path(args.out or Path("out") / spec.name)
    with FolderLock(out, "curate run"), stop_on_first_interrupt():
        with dask_client(workers=args.workers, scheduler=args.scheduler) as client:
            run_pipeline(spec, out, client, force=args.force)
            report = write_report(out, client=client)
    print(summary_text(out))
    print(f"\ncurated: {out / 'curated'}\nledger:  {out / 'ledger'}\nreport:  {report}")
    return 0


def _cmd_train_quality(args) -> int:
    from curation.cluster import dask_client, stop_on_first_interrupt
    from curation.pipeline import run_stages
    from curation.run_lock import FolderLock
    from curation.spec import load_spec
    from curation.stages.quality import train_quality

    spec = load_spec(args.spec)
    if spec.stages.quality is None:
        print(f"curate train-quality: error: {args.spec} has no `stages.quality`",
              file=sys.stderr)
        return 2
    out = out_path(args.out or Path("out") / spec.name)
    with FolderLock(out, "curate train-quality"), stop_on_first_interrupt(), \
            dask_client(workers=args.workers, scheduler=args.scheduler) as client:
        before = run_stages(spec, out, client, until="quality")
        metrics = train_quality(spec.stages.quality, spec, before[-1].partitions, out, client,
                                force=args.force)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"model: {out / 'quality' / 'model.bin'}")
    return 0


def _cmd_export_megatron(args) -> int:
    from curation.megatron_export import export_megatron

    bin_path, idx_path = export_megatron(Path(args.tokens), args.prefix)
    print(f"wrote {bin_path} and {idx_path}")
    return 0


def _cmd_report(args) -> int:
    from curation.report import summary_text, write_report

    out = out_path(args.out)
    if args.workers or args.scheduler:
        from curation.cluster import dask_client

        with dask_client(workers=args.workers, scheduler=args.scheduler) as client:
            path = write_report(out, train_tokens=args.train_tokens, client=client)
    else:  # counted here, one file at a time
        path = write_report(out, train_tokens=args.train_tokens)
    print(summary_text(out))
    print(f"\nreport: {path} and {path.with_suffix('.html')} (plots in {path.parent / 'report'})")
    return 0


def _cmd_inspect(args) -> int:
    from curation.inspect import InspectError, inspect_doc, inspect_samples, inspect_shard
    from training.data import ShardError

    try:
        if args.what == "shard":
            text = inspect_shard(out_path(args.path))
        elif args.what == "samples":
            text = inspect_samples(out_path(args.out), n=args.n, seq_len=args.seq_len,
                                   split=args.split)
        else:
            text = inspect_doc(out_path(args.out), args.id)
    except (InspectError, ShardError) as exc:
        print(f"curate inspect {args.what}: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a run: a shard, blended samples, a document")
    what = p.add_subparsers(dest="what", required=True)
    q = what.add_parser("shard", help="summary of a token shard (.arrow) or its manifest.json")
    q.add_argument("path")
    q = what.add_parser("samples", help="decoded samples of the blended training stream")
    q.add_argument("out")
    q.add_argument("--n", type=int, default=3, help="number of samples (default 3)")
    q.add_argument("--seq-len", type=int, default=128, help="tokens per sample (default 128)")
    q.add_argument("--split", default="train", choices=["train", "valid", "test"])
    q = what.add_parser("doc", help="a document's fate: its ledger rows and curated copy")
    q.add_argument("out")
    q.add_argument("id")
    p.set_defaults(func=_cmd_inspect)


def _cmd_demo_corpus(args) -> int:
    from curation.demo_corpus import build_demo_corpus

    summary = build_demo_corpus(Path(args.dir), scale=args.scale)
    counts = ", ".join(f"{name} {info['documents']:,}"
                       for name, info in summary["sources"].items())
    print(f"demo corpus written to {args.dir}: {summary['documents_total']:,} documents "
          f"({counts}); planted problems listed in {Path(args.dir) / 'demo_corpus.json'}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _add_cluster_args(parser: argparse.ArgumentParser,
                      workers_help: str = "local cluster size (default: CPU count)") -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, help=workers_help)
    where.add_argument("--scheduler", help="a running Dask scheduler, e.g. tcp://host:8786")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a corpus spec through the curation DAG")
    p.add_argument("spec")
    p.add_argument("--out", help="output directory (default: out/<spec name>)")
    _add_cluster_args(p)
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("validate", help="check a spec and list every problem")
    p.add_argument("spec")
    p.add_argument("--no-files", action="store_true", help="do not check that input paths exist")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("train-quality",
                       help="train the quality classifier of a spec (stages before it run first)")
    p.add_argument("spec")
    p.add_argument("--out", help="output directory (default: out/<spec name>)")
    _add_cluster_args(p)
    p.add_argument("--force", action="store_true", help="retrain even if a model exists")
    p.set_defaults(func=_cmd_train_quality)

    p = sub.add_parser("export-megatron",
                       help="write Megatron-LM .bin/.idx files from one source's token shards")
    p.add_argument("tokens", help="a source's shard folder, e.g. OUT/tokens/web")
    p.add_argument("prefix", help="output prefix: writes PREFIX.bin and PREFIX.idx")
    p.set_defaults(func=_cmd_export_megatron)

    p = sub.add_parser("report", help="rebuild OUT/report.md, report.html and plots from a run")
    p.add_argument("out")
    p.add_argument("--train-tokens", type=int,
                   help="tokens the trainer will see, for the blend table's epochs "
                        "(default: one pass over a corpus-sized blend)")
    _add_cluster_args(p, "count on a local cluster of N workers (default: in this process)")
    p.set_defaults(func=_cmd_report)

    _add_inspect_parser(sub)

    p = sub.add_parser("demo-corpus", help="write the embedded demo corpus to DIR")
    p.add_argument("dir")
    p.add_argument("--scale", type=float, default=1.0, help="multiply document counts")
    p.set_defaults(func=_cmd_demo_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    from curation.io import InputError
    from curation.run_lock import LockHeld
    from curation.spec import SpecError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, InputError, FileNotFoundError, LockHeld) as exc:
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        if args.command == "validate" and getattr(exc, "missing_files", False):
            print(f"(only input files are missing: `curate validate --no-files {args.spec}` "
                  "checks the rest of the spec without them)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
