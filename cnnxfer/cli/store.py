"""`cnnxfer store info DIR` and `cnnxfer store verify DIR`: a feature store's settings and
counts, and a check of every shard against its checksum and the manifest
(cnnxfer.data.store)."""
from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from ..data import store

    if args.action == "verify":
        problems = store.verify(args.folder)
        for problem in problems:
            print(f"{args.folder}: {problem}")
        if problems:
            print(f"cnnxfer store verify: {len(problems)} problems in {args.folder}")
            return 1
        reader = store.open(args.folder)
        print(f"{args.folder}: ok ({len(reader.manifest['shards'])} shards, {len(reader)} "
              f"images, {reader.manifest['patches']} patches checked)")
        return 0
    reader = store.open(args.folder)
    manifest = reader.manifest
    print(f"{args.folder}: {len(reader)} images, {manifest['patches']} patches, "
          f"{manifest['failures']} failed, {len(manifest['shards'])} shards, "
          f"{sum(s['bytes'] for s in manifest['shards']) / 2**20:.1f} MiB")
    print(json.dumps(reader.settings, indent=1))
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("store", help="a feature store: info (settings and counts) or "
                                                "verify (checksums against the manifest)")
    parser.add_argument("action", choices=("info", "verify"))
    parser.add_argument("folder", help="the store folder (cnnxfer extract --store DIR)")
    parser.set_defaults(run=run)
