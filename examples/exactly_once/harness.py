"""Crash harness for job.py: proves exactly-once end to end.

It runs the job against real sluice gateways and kills (SIGKILL) the job,
the gateway, or both: at exact points of the protocol (before, during or
after Write, Persist, CloseForCommit, Commit, Recover and Open, injected by
the job's --crash hook) and at random moments. After every crash it
restarts what died and lets the job resume from its checkpoint. When the
wanted number of crashes has happened the job runs to the end; a final
cleanup (the gateway's janitor, with a short TTL) removes what crashed
sessions left, and a verifier checks that:

- the committed parts hold every source record exactly once, in order;
- no in-progress file, tail object or multipart upload is left.

    python examples/exactly_once/harness.py --sluice target/release/sluice --backend file
    python examples/exactly_once/harness.py --sluice target/release/sluice --backend s3 \\
        --s3-endpoint http://127.0.0.1:5000 --bucket jobs --replicas 2
    python examples/exactly_once/harness.py --sluice target/release/sluice --backend gs \\
        --gs-endpoint http://127.0.0.1:9023 --bucket jobs --replicas 2
    python examples/exactly_once/harness.py --sluice target/release/sluice --backend hdfs \\
        --hdfs hdfs://127.0.0.1:8020 --webhdfs http://127.0.0.1:9870 --replicas 2

It prints a summary (and --json a machine-readable one) and exits non-zero
when anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import job as job_module  # noqa: E402  (the source and transform to check against)

# A job run that checkpoints nothing for this long is hung.
HUNG_AFTER = 120
# The final cleanup has failed once the leftovers stop going down for this long.
CLEANUP_STALLED_AFTER = 30
METHODS = ["Write", "Persist", "CloseForCommit", "Commit", "Recover", "Open"]
WHENS = ["before", "during", "after"]
VICTIMS = ["job", "gateway", "both"]
# Crash points every run covers, for each victim: mid-write, mid-persist,
# between close-for-commit and commit, mid-commit.
REQUIRED = [
    f"{method}:1:{victim}:{when}"
    for method, when in (("Write", "during"), ("Persist", "during"), ("CloseForCommit", "after"), ("Commit", "during"))
    for victim in VICTIMS
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """One `sluice serve` on a fixed port, restarted on the same data dir."""

    def __init__(self, name: str, binary: str, data_dir: Path, config: str, logs: Path) -> None:
        self.name, self.binary, self.data_dir = name, binary, data_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config_path = data_dir / "sluice.yaml"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)
        self.log = open(logs / f"gateway-{name}.log", "ab")
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, extra_config: str = "") -> None:
        if extra_config:
            self.config_path.write_text(self.config_path.read_text() + extra_config)
        for _ in range(50):
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "serve",
                    "--listen",
                    self.address,
                    "--data-dir",
                    str(self.data_dir),
                    "--config",
                    str(self.config_path),
                    "--admin-listen",
                    "off",
                ],
                stdout=self.log,
                stderr=self.log,
                env={**os.environ, "RUST_LOG": "warn"},
            )
            if self._wait_listening():
                self.starts += 1
                return
            self.proc.kill()
            self.proc.wait()
            time.sleep(0.1)  # the port may still be held by the killed one
        raise RuntimeError(f"gateway {self.name} did not start; see {self.log.name}")

    def _wait_listening(self) -> bool:
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


class Backend:
    """Where the job writes, and how to look inside for leftovers."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.kind = args.backend
        self.empty_uploads = 0
        run = f"job-{secrets.token_hex(4)}"
        if self.kind == "file":
            self.root = work / "files"
            self.root.mkdir()
            self.out = f"file://{self.root.resolve()}/{run}"
            self.config = f"fs.file.allowed-roots: {self.root.resolve()}\n"
            self.dir = self.root.resolve() / run
        elif self.kind == "hdfs":
            self.webhdfs, self.prefix = args.webhdfs.rstrip("/"), f"/{run}"
            self.out = f"{args.hdfs.rstrip('/')}/{run}"
            self.config = f"fs.defaultFS: {args.hdfs}\n"
        elif self.kind == "gs":
            self.endpoint, self.bucket, self.prefix = args.gs_endpoint, args.bucket, run
            self.out = f"gs://{self.bucket}/{run}"
            self.config = f"gs.endpoint: {self.endpoint}\ngs.writer.chunk.size: 256kb\n"
        else:
            self.endpoint, self.bucket, self.prefix = args.s3_endpoint, args.bucket, run
            self.out = f"s3://{self.bucket}/{run}"
            self.config = (
                f"s3.endpoint: {self.endpoint}\ns3.access-key: test\ns3.secret-key: test\n"
                "s3.region: us-east-1\ns3.path.style.access: true\n"
            )

    def leftovers(self) -> List[str]:
        """Everything under the job's output that is not a committed part,
        and (S3) every multipart upload still open."""
        part = re.compile(r"part-\d{5}$")
        if self.kind == "file":
            found = [str(p.relative_to(self.dir)) for p in self.dir.rglob("*")]
            return sorted(f for f in found if not part.fullmatch(f))
        if self.kind == "gs":
            return sorted(k for k in self.gs_keys() if not part.fullmatch(k))
        if self.kind == "hdfs":
            return sorted(k for k in self.hdfs_files(self.prefix) if not part.fullmatch(k))
        import boto3  # the S3 check needs boto3 (it comes with moto)

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            keys += [o["Key"][len(self.prefix) + 1 :] for o in page.get("Contents", [])]
        uploads = s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix + "/").get("Uploads", [])
        left = [k for k in keys if not part.fullmatch(k)]
        self.empty_uploads = 0
        for u in uploads:
            try:
                parts = s3.list_parts(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
            except s3.exceptions.NoSuchUpload:
                continue  # aborted (by the janitor) since the listing
            if parts:
                left.append(f"upload:{u['Key']} ({len(parts)} parts)")
            else:
                # A gateway killed between CreateMultipartUpload and sled's
                # record of it leaves an upload that no record names and
                # that holds nothing; S3's AbortIncompleteMultipartUpload
                # lifecycle rule removes those. Counted, not hidden.
                self.empty_uploads += 1
        return sorted(left)

    def gs_keys(self) -> List[str]:
        """Every object under the job's output, through the GCS JSON API
        (component objects of files in progress included)."""
        import urllib.parse
        import urllib.request

        keys: List[str] = []
        token = ""
        while True:
            query = {"prefix": self.prefix + "/"}
            if token:
                query["pageToken"] = token
            url = (
                f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o?"
                + urllib.parse.urlencode(query)
            )
            with urllib.request.urlopen(url) as answer:
                page = json.load(answer)
            keys += [item["name"][len(self.prefix) + 1 :] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return keys

    def hdfs_files(self, folder: str) -> List[str]:
        """Every file under `folder` (temp files included), relative to the
        job's output, through WebHDFS's LISTSTATUS."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.webhdfs}/webhdfs/v1{folder}?op=LISTSTATUS") as answer:
                statuses = json.load(answer)["FileStatuses"]["FileStatus"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        found: List[str] = []
        for status in statuses:
            path = f"{folder}/{status['pathSuffix']}"
            if status["type"] == "DIRECTORY":
                found += self.hdfs_files(path)
            else:
                found.append(path[len(self.prefix) + 1 :])
        return found


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="sluice-exactly-once-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.backend = Backend(args, self.work)
        self.program = self.job_program()
        key = secrets.token_hex(32)
        config = self.backend.config + f"handle.signing.key: {key}\n"
        # Replicas share the backend and the signing key, not their sled.
        self.gateways = [
            Gateway(chr(ord("a") + i), args.sluice, self.work / f"gateway-{chr(ord('a') + i)}", config, self.logs)
            for i in range(args.replicas)
        ]
        self.checkpoint = self.work / "checkpoint.json"
        self.crash_log = self.work / "crashes.log"
        self.crash_log.touch()
        self.counts: Dict[str, int] = collections.Counter()
        self.required = list(REQUIRED)
        # Runs that resumed on another replica than the run before.
        self.replica_switches = 0
        self.last_gateway: Optional[Gateway] = None
        self.last_gateway_died = False
        self.job_runs = 0

    def progress(self, text: str) -> None:
        if not self.args.quiet:
            print(f"\r{text:<78}", end="", file=sys.stderr, flush=True)

    def job_program(self) -> List[str]:
        """The job in the language asked for: job.py, or its ports in the Go
        and TypeScript clients (built here once)."""
        clients = HERE.parent.parent / "clients"
        if self.args.job == "python":
            return [sys.executable, str(HERE / "job.py")]
        if self.args.job == "go":
            binary = self.work / "job-go"
            if not binary.exists():
                subprocess.run(["go", "build", "-o", str(binary), "./examples/job"], cwd=clients / "go", check=True)
            return [str(binary)]
        script = clients / "node" / "dist" / "examples" / "job.js"
        if not script.exists():
            raise SystemExit(f"{script} is missing: run `npm ci && npm run build` in clients/node first")
        return ["node", str(script)]

    def job_command(self, gateway: Gateway, crash: Optional[str]) -> List[str]:
        a = self.args
        cmd = [
            *self.program,
            "--gateway",
            gateway.address,
            "--out",
            self.backend.out,
            "--checkpoint",
            str(self.checkpoint),
            "--records",
            str(a.records),
            "--records-per-part",
            str(a.records_per_part),
            "--checkpoint-every",
            str(a.checkpoint_every),
            "--crash-log",
            str(self.crash_log),
            "--gateway-pid",
            str(gateway.proc.pid),
        ]
        if crash:
            cmd += ["--crash", crash]
        return cmd

    def restart_dead_gateways(self) -> None:
        for gw in self.gateways:
            if not gw.alive():
                gw.kill()
                gw.start()

    def crashes(self) -> int:
        return sum(self.counts.values())

    def checkpoint_mtime(self) -> float:
        try:
            return self.checkpoint.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def run_job_once(self, want_crash: bool) -> int:
        """One run of the job, crashed when asked. Returns its exit code
        (negative: killed by that signal).

        The crash is the next point of REQUIRED not hit yet, else a random
        point; and, a random moment after the job restored its checkpoint
        (or after a required point fired), a random kill: the fallback when
        a hook's point never comes or the job rides through a gateway
        crash on retries, and crashes at moments no hook names."""
        self.restart_dead_gateways()
        if self.last_gateway_died and len(self.gateways) > 1:
            # Fail over, as a client whose replica died would.
            gateway = self.rng.choice([g for g in self.gateways if g is not self.last_gateway])
        else:
            gateway = self.rng.choice(self.gateways)
        self.last_gateway_died = False
        if self.last_gateway is not None and gateway is not self.last_gateway:
            self.replica_switches += 1
        self.last_gateway = gateway
        spec = None
        if want_crash:
            if self.required:
                spec = self.required[0]
            elif self.rng.random() < 0.6:
                spec = ":".join(
                    [
                        self.rng.choice(METHODS),
                        str(self.rng.randint(1, 3)),
                        self.rng.choice(VICTIMS),
                        self.rng.choice(WHENS),
                    ]
                )
        required = spec is not None and spec in REQUIRED
        fired_before = len(self.crash_log.read_text().splitlines())
        stderr_path = self.logs / f"job-{self.job_runs}.log"
        self.job_runs += 1
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(self.job_command(gateway, spec), stdout=subprocess.PIPE, stderr=err)
            restored = threading.Event()

            def watch_stdout() -> None:
                for line in proc.stdout:
                    if line.startswith(b"restored"):
                        restored.set()

            threading.Thread(target=watch_stdout, daemon=True).start()
            # The watchdog counts from the job's last progress (its last
            # checkpoint), not from its start: a final run with much left
            # to write is busy, not hung.
            last_progress, last_checkpoint = time.time(), self.checkpoint_mtime()
            kill_at: Optional[float] = None
            while proc.poll() is None:
                now = time.time()
                checkpoint = self.checkpoint_mtime()
                if checkpoint != last_checkpoint:
                    last_progress, last_checkpoint = now, checkpoint
                if now > last_progress + HUNG_AFTER:
                    proc.kill()
                    raise RuntimeError(
                        f"the job made no progress (no checkpoint) for {HUNG_AFTER} s; see {stderr_path}"
                    )
                armed = restored.is_set() and (
                    not required or len(self.crash_log.read_text().splitlines()) > fired_before
                )
                if want_crash and kill_at is None and armed:
                    kill_at = now + self.rng.uniform(0.05, 0.5)
                if kill_at is not None and now >= kill_at:
                    victim = self.rng.choice(VICTIMS)
                    if victim in ("gateway", "both"):
                        gateway.kill()
                    if victim in ("job", "both"):
                        proc.kill()
                    self.counts[f"random:{victim}"] += 1
                    # A job that rides through (it held no session) is
                    # crashed again a moment later.
                    kill_at = now + self.rng.uniform(0.05, 0.5)
                # A dead gateway comes back, as an orchestrator would bring
                # it back, on the same data dir and port.
                if not gateway.alive():
                    self.last_gateway_died = True
                    time.sleep(self.rng.uniform(0, 0.3))
                    self.restart_dead_gateways()
                time.sleep(0.005)
        code = proc.returncode
        if not gateway.alive():
            self.last_gateway_died = True
        fired = self.crash_log.read_text().splitlines()[fired_before:]
        for line in fired:
            method, _, victim_kind, when = line.split(":")
            self.counts[f"{method}:{when}:{victim_kind}"] += 1
            if line in self.required:
                self.required.remove(line)
        if code not in (0, -signal.SIGKILL, job_module.GATEWAY_LOST):
            raise RuntimeError(f"the job failed with exit code {code}:\n{stderr_path.read_text()}")
        return code

    def run(self) -> Dict[str, object]:
        started = time.time()
        for gw in self.gateways:
            gw.start()
        try:
            done = False
            while self.crashes() < self.args.crashes or self.required:
                if self.run_job_once(want_crash=True) == 0:
                    done = True
                    print(
                        f"\nthe job finished after only {self.crashes()} crashes; give it more --records",
                        file=sys.stderr,
                    )
                    break
                self.progress(f"crashes {self.crashes()}/{self.args.crashes}, job runs {self.job_runs}")
            while not done:
                done = self.run_job_once(want_crash=False) == 0
            self.progress("job finished; final cleanup")
            leftovers_before = self.backend.leftovers()
            # Final cleanup: each replica's janitor removes what crashed
            # sessions left in the stagings its sled knows (no session is
            # live after a restart).
            for gw in self.gateways:
                gw.kill()
                gw.start("janitor.ttl: 1s\njanitor.interval: 1s\n")
            # Each janitor works through every staging its sled knows: with
            # hundreds of parts that takes longer than any fixed wait, so
            # wait while the leftovers keep going down.
            left = self.backend.leftovers()
            last_progress = time.time()
            while left and time.time() < last_progress + CLEANUP_STALLED_AFTER:
                time.sleep(0.5)
                now_left = self.backend.leftovers()
                if len(now_left) < len(left):
                    last_progress = time.time()
                left = now_left
                self.progress(f"final cleanup: {len(left)} leftovers")
            leftovers = self.backend.leftovers()
            verdict = self.verify()
        finally:
            for gw in self.gateways:
                gw.kill()
        self.progress("")
        summary = {
            "backend": self.backend.kind,
            "job": self.args.job,
            "replicas": self.args.replicas,
            "records": self.args.records,
            "crashes": self.crashes(),
            "crash_points": dict(sorted(self.counts.items())),
            "job_runs": self.job_runs,
            "gateway_starts": sum(gw.starts for gw in self.gateways),
            "replica_switches": self.replica_switches,
            "required_points_missed": self.required,
            "leftovers_before_cleanup": len(leftovers_before),
            "leftovers": leftovers,
            "unrecorded_empty_uploads": self.backend.empty_uploads,
            "seconds": round(time.time() - started, 1),
            **verdict,
        }
        summary["ok"] = (
            summary["lost"] == 0
            and summary["duplicated"] == 0
            and summary["out_of_order"] == 0
            and summary["corrupt"] == 0
            and not leftovers
            and summary["crashes"] >= self.args.crashes
            and not self.required
        )
        if summary["ok"] and not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            summary["work_dir"] = str(self.work)
        return summary

    def verify(self) -> Dict[str, int]:
        """Reads the committed parts back through sluice and checks every
        record against the source."""
        sys.path.insert(0, str(HERE))
        from sluice_client import Writer

        with Writer(self.gateways[0].address) as reader:
            names = sorted(e.name for e in reader.list(self.backend.out) if not e.is_dir)
            seen: collections.Counter = collections.Counter()
            out_of_order = corrupt = 0
            for name in names:
                lines = reader.read(f"{self.backend.out}/{name}").decode().splitlines(keepends=True)
                previous = None
                for line in lines:
                    try:
                        offset = int(line.split("|", 1)[0])
                    except ValueError:
                        corrupt += 1
                        continue
                    if line.encode() != job_module.transform(job_module.source_record(offset)):
                        corrupt += 1
                        continue
                    if previous is not None and offset != previous + 1:
                        out_of_order += 1
                    previous = offset
                    seen[offset] += 1
        expected = range(self.args.records)
        return {
            "parts": len(names),
            "records_committed": sum(seen.values()),
            "lost": sum(1 for i in expected if seen[i] == 0),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "out_of_order": out_of_order,
            "corrupt": corrupt,
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sluice", required=True, help="the sluice binary")
    p.add_argument("--backend", choices=["file", "s3", "gs", "hdfs"], default="file")
    p.add_argument(
        "--job",
        choices=["python", "go", "ts"],
        default="python",
        help="the job's language: job.py, clients/go/examples/job, or clients/node/examples/job.ts (built)",
    )
    p.add_argument("--s3-endpoint", help="S3 endpoint (e.g. moto_server) for --backend s3")
    p.add_argument("--gs-endpoint", help="GCS JSON API endpoint (e.g. fake-gcs-server) for --backend gs")
    p.add_argument("--hdfs", help="the NameNode (hdfs://host:port) for --backend hdfs")
    p.add_argument("--webhdfs", help="the NameNode's WebHDFS (http://host:port), to look for leftovers")
    p.add_argument("--bucket", default="jobs", help="an existing bucket for --backend s3 or gs")
    p.add_argument("--replicas", type=int, default=1, help="gateways sharing backend and key")
    p.add_argument("--crashes", type=int, default=40)
    p.add_argument("--records", type=int, help="records in the source; default 800 per crash")
    p.add_argument("--records-per-part", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args()
    if args.backend == "s3" and not args.s3_endpoint:
        p.error("--backend s3 needs --s3-endpoint (start one with: moto_server -p 5000) and --bucket")
    if args.backend == "gs" and not args.gs_endpoint:
        p.error(
            "--backend gs needs --gs-endpoint (start one with: gcp-storage-emulator start --port 9023) and --bucket"
        )
    if args.backend == "hdfs" and not (args.hdfs and args.webhdfs):
        p.error(
            "--backend hdfs needs --hdfs hdfs://<namenode>:<port> and --webhdfs http://<namenode>:<http port>"
            " (a cluster's are fs.defaultFS and dfs.namenode.http-address in its configuration)"
        )
    if args.records is None:
        args.records = max(2000, 800 * args.crashes)
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    summary = Harness(args).run()
    summary["seed"] = args.seed
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"exactly-once on {summary['backend']}:// with {summary['replicas']} replica(s), "
            f"the {summary['job']} job, seed {args.seed}"
        )
        print(
            f"  {summary['crashes']} crashes in {summary['job_runs']} job runs, "
            f"{summary['gateway_starts']} gateway starts, {summary['seconds']} s"
        )
        if summary["replicas"] > 1:
            print(f"  {summary['replica_switches']} runs resumed on another replica than the run before")
        for point, n in summary["crash_points"].items():
            print(f"    {point:<40} {n}")
        print(f"  {summary['records_committed']} of {summary['records']} records committed in {summary['parts']} parts")
        print(
            f"  lost {summary['lost']}, duplicated {summary['duplicated']}, out of order {summary['out_of_order']}, "
            f"corrupt {summary['corrupt']}"
        )
        print(
            f"  leftovers: {summary['leftovers_before_cleanup']} before the final cleanup, "
            f"{len(summary['leftovers'])} after"
        )
        if summary["unrecorded_empty_uploads"]:
            print(
                f"  {summary['unrecorded_empty_uploads']} empty multipart upload(s) that no record names "
                "(gateway killed between CreateMultipartUpload and sled's record; see the README)"
            )
        print("  OK" if summary["ok"] else f"  FAILED (work dir kept: {summary.get('work_dir')})")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
