"""`skyhaul put`, `skyhaul objects`, `skyhaul rm`, `skyhaul reconcile`, `skyhaul mdc-status`,
`skyhaul blobs`: data in and out of the modular data center, and what arrived in the region."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
from pathlib import Path

from skyhaul.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    JSON_HELP,
    add_formatter,
    fail,
    print_json,
    print_table,
    progress_bar,
    proto_dict,
    resolve_address,
    rfc3339,
    rpc_error_message,
    running_endpoints,
)

PRIORITIES = ("telemetry", "interactive", "bulk")
STATES = ("pending", "uploading", "synced", "failed")
CHUNK_BYTES = 1 << 20


def register(sub: argparse._SubParsersAction) -> None:
    put = sub.add_parser("put", help="store a file in the data center; it syncs to the region by itself")
    add_formatter(
        put,
        """The object is durable in the data center when the command returns; the sync worker then
uploads it to the home region (check with `skyhaul objects` or `skyhaul blobs`).

examples:
  skyhaul put scan-0001.bin                                   key = the file name, bulk priority
  skyhaul put engine.log --key telemetry/engine/0001.log --priority telemetry
  skyhaul put frame.jpg --content-type image/jpeg --metadata camera=north --metadata shift=2
""",
    )
    put.add_argument("file", help="the file to store")
    put.add_argument("--key", help="object key (default: the file name)")
    put.add_argument("--priority", choices=PRIORITIES, default="bulk", help="sync class (default bulk)")
    put.add_argument("--content-type", default="", help="MIME type stored with the blob")
    put.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    _add_mdc_flags(put)
    put.add_argument("--json", action="store_true", help=JSON_HELP)
    put.set_defaults(func=cmd_put)

    objects = sub.add_parser("objects", help="objects in the data center and their sync state")
    add_formatter(
        objects,
        """examples:
  skyhaul objects                         every object (first 1000)
  skyhaul objects --state pending         the backlog
  skyhaul objects --state failed --json   what could not be synced, and why
  skyhaul objects --prefix sensor/ --limit 20
""",
    )
    objects.add_argument("--state", choices=STATES, help="only objects in this state")
    objects.add_argument("--prefix", default="", help="only keys starting with this")
    objects.add_argument("--limit", type=int, default=1000, help="rows at most (default 1000)")
    _add_mdc_flags(objects)
    objects.add_argument("--json", action="store_true", help=JSON_HELP)
    objects.set_defaults(func=lambda a: asyncio.run(cmd_objects(a)))

    rm = sub.add_parser(
        "rm", help="delete objects from the data center's disk (synced ones stay in the region)"
    )
    add_formatter(
        rm,
        """A synced object is removed from the data center only: the region keeps its blob, and
reconciliation keeps checking it there. An object that has not synced yet is refused, since its
bytes exist nowhere else, unless --force says losing it is accepted.

examples:
  skyhaul rm sensor/mdc-prudhoe/00000001
  skyhaul rm scratch/a.bin scratch/b.bin --force     also unsynced ones: their data is lost
""",
    )
    rm.add_argument("keys", nargs="+", metavar="KEY", help="object keys")
    rm.add_argument(
        "--force", action="store_true", help="also delete objects not synced yet (their data is lost)"
    )
    _add_mdc_flags(rm)
    rm.add_argument("--json", action="store_true", help=JSON_HELP)
    rm.set_defaults(func=lambda a: asyncio.run(cmd_rm(a)))

    reconcile = sub.add_parser("reconcile", help="check now that the region still holds every synced object")
    add_formatter(
        reconcile,
        """Compares every synced (and released) object with the region's blobs by size and sha256.
One the region lost is uploaded again while the data center still has its bytes; one whose bytes
the data center already released is reported as lost. The data center also does this by itself
every SKYHAUL_RECONCILE_INTERVAL_S seconds (default 300).

examples:
  skyhaul reconcile
  skyhaul reconcile --json
""",
    )
    _add_mdc_flags(reconcile)
    reconcile.add_argument("--json", action="store_true", help=JSON_HELP)
    reconcile.set_defaults(func=lambda a: asyncio.run(cmd_reconcile(a)))

    status = sub.add_parser("mdc-status", help="the data center's link, backlog, throughput and totals")
    add_formatter(
        status,
        """examples:
  skyhaul mdc-status
  skyhaul mdc-status --json
  skyhaul mdc-status --mdc mdc-kodiak
  skyhaul mdc-status --mdc-addr 127.0.0.1:50054
""",
    )
    _add_mdc_flags(status)
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.set_defaults(func=lambda a: asyncio.run(cmd_mdc_status(a)))

    blobs = sub.add_parser("blobs", help="blobs committed in the region")
    add_formatter(
        blobs,
        """Without --container, every container is listed.

examples:
  skyhaul blobs                                  everything in the region
  skyhaul blobs --container mdc-sync --prefix sensor/
  skyhaul blobs --region westus2 --json
  skyhaul blobs --region-addr 127.0.0.1:50053
""",
    )
    blobs.add_argument("--container", help="only this container")
    blobs.add_argument("--prefix", default="", help="only names starting with this")
    blobs.add_argument("--limit", type=int, default=1000, help="rows at most per container (default 1000)")
    blobs.add_argument("--region", metavar="ID", help="region id (default: the first region)")
    blobs.add_argument("--region-addr", metavar="HOST:PORT", help="the region service's address")
    blobs.add_argument("--json", action="store_true", help=JSON_HELP)
    blobs.set_defaults(func=lambda a: asyncio.run(cmd_blobs(a)))


def _add_mdc_flags(parser: argparse.ArgumentParser) -> None:
    # --mdc is a data center id in every command (--dc the same); an address has its own flag.
    parser.add_argument(
        "--mdc", "--dc", dest="mdc", metavar="ID", help="data center id (default: the first data center)"
    )
    parser.add_argument("--mdc-addr", metavar="HOST:PORT", help="the data center service's address")


def _address(service: str, explicit: str | None, label: str | None) -> str:
    """An id the running system does not have is an error, never a silent fall-back to another one."""
    if label and not explicit:
        running = running_endpoints()
        known = sorted(n for n in (running or {}).get("services", {}) if n.startswith(service))
        if running and label not in known:
            raise ValueError(f"the running system has no {label} (it has {', '.join(known) or 'none'})")
    return resolve_address(service, explicit, label)


def _mdc_address(args: argparse.Namespace) -> str:
    running = running_endpoints()
    if args.mdc and not args.mdc_addr and running and running.get("data_centers"):
        # A run that records where each data center lives (per-dc or shards): its hosting process.
        return resolve_address("mdc", None, data_center=args.mdc)
    label = None
    if args.mdc:  # `skyhaul up` names a data center's process by its id, with an mdc- prefix if it has none
        label = args.mdc if args.mdc.startswith("mdc") else f"mdc-{args.mdc}"
    return _address("mdc", args.mdc_addr, label)


# --------------------------------------------------------------------------- formatting


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _time(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds + ts.nanos * 1e-9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _object_row(o) -> dict:
    from skyhaul.v1 import mdc_pb2

    return {
        "key": o.key,
        "size": o.size,
        "state": _enum(mdc_pb2.SyncState.Name(o.state), "SYNC_STATE_"),
        "priority": _enum(mdc_pb2.PriorityClass.Name(o.priority), "PRIORITY_CLASS_"),
        "sha256": o.sha256_hex,
        "bytes_confirmed": o.bytes_confirmed,
        "attempts": o.attempts,
        "created_at": rfc3339(o.created_at),
        "synced_at": rfc3339(o.synced_at),
        "region_etag": o.region_etag,
        "error": o.error,
        "metadata": dict(o.metadata),
    }


def _parse_metadata(items: list[str]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--metadata {item!r} is not KEY=VALUE")
        metadata[key] = value
    return metadata


# --------------------------------------------------------------------------- commands


def _file_digest(path: Path) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.digest()


def _read_chunks(path: Path):
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def cmd_put(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return fail(f"{path}: no such file", EXIT_USAGE)
    try:
        metadata = _parse_metadata(args.metadata)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    # The data center checks this digest against what it received: a short or garbled stream stores nothing.
    size, digest = _file_digest(path)
    return asyncio.run(_put(args, path, size, digest, metadata))


async def _put(
    args: argparse.Namespace, path: Path, size: int, digest: bytes, metadata: dict[str, str]
) -> int:
    import grpc

    from skyhaul.runtime.clients import channel
    from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

    header = mdc_pb2.ObjectHeader(
        key=args.key or path.name,
        priority=getattr(mdc_pb2, f"PRIORITY_CLASS_{args.priority.upper()}"),
        expected_sha256=digest,
        metadata=metadata,
        content_type=args.content_type,
        data_center_id=args.mdc or "",
    )

    async def messages(advance):
        yield mdc_pb2.PutObjectRequest(header=header)
        for chunk in _read_chunks(path):  # a 1 MiB local read between messages: fine for a CLI
            yield mdc_pb2.PutObjectRequest(data=chunk)
            advance(len(chunk))

    try:
        address = _mdc_address(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    async with channel(address) as ch:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(ch)
        try:
            with progress_bar(size, "uploading") as advance:
                reply = await stub.PutObject(messages(advance), timeout=60 + size / 20e6)
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    row = _object_row(reply.object)
    if args.json:
        print_json(row)
    else:
        print(
            f"stored {row['key']} ({_size(row['size'])}, sha256 {row['sha256'][:16]}...), {row['state']} sync"
        )
    return EXIT_OK


async def cmd_objects(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clients import channel
    from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

    if args.limit < 1:
        return fail(f"--limit {args.limit} must be at least 1", EXIT_USAGE)
    state = (
        getattr(mdc_pb2, f"SYNC_STATE_{args.state.upper()}") if args.state else mdc_pb2.SYNC_STATE_UNSPECIFIED
    )
    try:
        address = _mdc_address(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    rows: list[dict] = []
    async with channel(address) as ch:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(ch)
        token = ""
        try:
            while len(rows) < args.limit:
                reply = await stub.ListObjects(
                    mdc_pb2.ListObjectsRequest(
                        prefix=args.prefix,
                        state=state,
                        page_token=token,
                        max_results=min(1000, args.limit - len(rows)),
                        data_center_id=args.mdc or "",
                    ),
                    timeout=10,
                )
                rows += [_object_row(o) for o in reply.objects]
                token = reply.next_page_token
                if not token:
                    break
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no objects")
        return EXIT_OK
    print_table(
        ["key", ">size", "state", "priority", ">staged", ">tries", "created (UTC)", "error"],
        [
            [
                r["key"],
                _size(r["size"]),
                r["state"],
                r["priority"],
                f"{r['bytes_confirmed'] / r['size']:.0%}" if r["size"] else "-",
                str(r["attempts"]),
                r["created_at"] or "-",
                r["error"],
            ]
            for r in rows
        ],
    )
    return EXIT_OK


async def cmd_rm(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clients import DEFAULT_DEADLINE_S, channel
    from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

    try:
        address = _mdc_address(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    rows: list[dict] = []
    async with channel(address) as ch:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(ch)
        for key in args.keys:
            try:
                reply = await stub.DeleteObject(
                    mdc_pb2.DeleteObjectRequest(key=key, force=args.force, data_center_id=args.mdc or ""),
                    timeout=DEFAULT_DEADLINE_S,
                )
            except grpc.RpcError as exc:
                # Keys before this one are deleted; say so, then stop (the rest stay as they are).
                if rows and not args.json:
                    print(f"deleted {len(rows)} of {len(args.keys)} objects before the error")
                return fail(*rpc_error_message(exc, address))
            rows.append(_object_row(reply.object))
            if not args.json:
                row = rows[-1]
                where = (
                    "the region keeps it"
                    if row["state"] == "synced"
                    else f"it was {row['state']}: its data is gone"
                )
                print(f"deleted {row['key']} ({_size(row['size'])}) from the data center; {where}")
    if args.json:
        print_json(rows)
    return EXIT_OK


async def cmd_reconcile(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from skyhaul.runtime.clients import channel
    from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

    try:
        address = _mdc_address(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    async with channel(address) as ch:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(ch)
        try:
            reply = await stub.Reconcile(mdc_pb2.ReconcileRequest(data_center_id=args.mdc or ""), timeout=120)
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    report = reply.report
    if args.json:
        print_json(MessageToDict(report, always_print_fields_with_no_presence=True))
    else:
        print(
            f"checked {report.objects_checked} objects against the region: {report.objects_reuploading} "
            f"uploading again, {report.objects_lost} lost"
        )
        for key in report.lost_keys:
            print(f"  LOST {key}  (the region lost it after the data center released its copy)")
    return EXIT_OK if not report.objects_lost else EXIT_FAILURE


async def cmd_mdc_status(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clients import DEFAULT_DEADLINE_S, channel
    from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc

    try:
        address = _mdc_address(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    async with channel(address) as ch:
        stub = mdc_pb2_grpc.ModularDataCenterServiceStub(ch)
        try:
            status = await stub.GetStatus(
                mdc_pb2.GetStatusRequest(data_center_id=args.mdc or ""), timeout=DEFAULT_DEADLINE_S
            )
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    if args.json:
        value = proto_dict(status)
        if not status.link.up:  # no satellite and no RTT while the link is down (not 0)
            value["link"]["rtt_ms"] = None
            value["link"]["satellite_index"] = None
        print_json(value)
        return EXIT_OK
    link, backlog, totals, workload = status.link, status.backlog, status.totals, status.workload
    if link.up:
        satellite = f"satellite {link.satellite_index}" if link.satellite_index >= 0 else "satellite unknown"
        rtt = f"RTT {link.rtt_ms:.1f} ms" if link.rtt_ms else "RTT unknown"
        capacity = (
            f"up {link.capacity_up_mbps:.0f} / down {link.capacity_down_mbps:.0f} Mbit/s"
            if link.capacity_up_mbps
            else "capacity unknown"
        )
        link_line = f"UP    {satellite}  {rtt}  {capacity}"
    else:
        link_line = "DOWN"
    if link.last_event_sequence == 0:
        link_line += "  (no link events yet: assumed up, failures drive the retries)"
    elif link.since.seconds:
        link_line += f"  since {_time(link.since)} (emulated)"
    oldest = backlog.oldest_age.seconds + backlog.oldest_age.nanos * 1e-9
    print(f"data center  {status.data_center_id}   (emulated time {_time(status.emulated_time)})")
    print(f"link         {link_line}")
    print(
        f"backlog      {backlog.objects} objects, {_size(backlog.bytes)}"
        + (f", oldest {oldest:.0f} s old (emulated)" if backlog.objects else "")
    )
    print(
        f"totals       put {totals.objects_put} ({_size(totals.bytes_put)})  synced {totals.objects_synced} "
        f"({_size(totals.bytes_synced)})  sent {_size(totals.bytes_sent)}  failed {totals.objects_failed}"
    )
    print(f"throughput   {totals.throughput_mbps:.1f} Mbit/s to the region (last 5 s, wall clock)")
    print(f"sync         {'PAUSED (link down)' if status.sync_paused else 'running'}")
    store = status.store
    capacity = f" of {_size(store.capacity_bytes)}" if store.capacity_bytes else ""
    state = "FULL: " + store.message if store.state == mdc_pb2.STORE_STATE_FULL else "ok"
    print(
        f"store        {_size(store.used_bytes)}{capacity} used, {_size(store.disk_free_bytes)} free on disk; {state}"
    )
    retention = store.retention
    limits = []
    if retention.HasField("max_age"):
        limits.append(f"synced objects kept {retention.max_age.seconds} s")
    if retention.max_bytes:
        limits.append(f"at most {_size(retention.max_bytes)}")
    print(
        f"retention    {', '.join(limits) or 'keep everything'}; released {store.objects_released} "
        f"({_size(store.bytes_released)})"
        + (f", LOST in the region: {store.objects_lost}" if store.objects_lost else "")
    )
    if status.HasField("last_reconcile"):
        last = status.last_reconcile
        outcome = last.error or (
            f"{last.objects_checked} checked, {last.objects_reuploading} uploading again, {last.objects_lost} lost"
        )
        print(f"reconcile    {_time(last.finished_at)}: {outcome}")
    if workload.objects_per_batch:
        interval = workload.interval.seconds + workload.interval.nanos * 1e-9
        priority = _enum(mdc_pb2.PriorityClass.Name(workload.priority), "PRIORITY_CLASS_")
        print(
            f"workload     {workload.objects_per_batch} x {_size(workload.object_size_bytes)} every {interval:g} s "
            f"emulated ({priority}, keys {workload.key_prefix}{status.data_center_id}/...)"
        )
    else:
        print("workload     off")
    return EXIT_OK


async def cmd_blobs(args: argparse.Namespace) -> int:
    import grpc

    from skyhaul.runtime.clients import channel
    from skyhaul.v1 import region_pb2, region_pb2_grpc

    if args.limit < 1:
        return fail(f"--limit {args.limit} must be at least 1", EXIT_USAGE)
    try:
        address = _address("region", args.region_addr, f"region-{args.region}" if args.region else None)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    rows: list[dict] = []
    async with channel(address) as ch:
        stub = region_pb2_grpc.CloudRegionServiceStub(ch)
        try:
            if args.container:
                containers = [args.container]
            else:
                containers = list(
                    (await stub.ListContainers(region_pb2.ListContainersRequest(), timeout=10)).containers
                )
            for container in containers:
                token = ""
                found = 0
                while found < args.limit:
                    reply = await stub.ListBlobs(
                        region_pb2.ListBlobsRequest(
                            container=container,
                            prefix=args.prefix,
                            page_token=token,
                            max_results=min(1000, args.limit - found),
                        ),
                        timeout=10,
                    )
                    found += len(reply.blobs)
                    rows += [
                        {
                            "container": container,
                            "name": b.name,
                            "size": b.size,
                            "sha256": b.sha256_hex,
                            "etag": b.etag,
                            "committed_at": rfc3339(b.committed_at),
                            "blocks": b.block_count,
                            "content_type": b.content_type,
                            "metadata": dict(b.metadata),
                        }
                        for b in reply.blobs
                    ]
                    token = reply.next_page_token
                    if not token:
                        break
        except grpc.RpcError as exc:
            return fail(*rpc_error_message(exc, address))
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no blobs" + (f" in {args.container}" if args.container else ""))
        return EXIT_OK
    print_table(
        ["container", "name", ">size", ">blocks", "committed (UTC)", "sha256"],
        [
            [
                r["container"],
                r["name"],
                _size(r["size"]),
                str(r["blocks"]),
                r["committed_at"] or "-",
                r["sha256"][:16] + "...",
            ]
            for r in rows
        ],
    )
    return EXIT_OK
