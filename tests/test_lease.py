"""One writer per module table (amr.lease): a second holder is refused with the holder named, a stale lease is
taken over, a lease taken over is noticed by its old holder; on a local disk, on S3 (moto) and on Google Cloud Storage
(fake-gcs-server)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from amr.lease import Lease, LeaseError


def places(tmp_path, s3_server, gcs_server) -> list[str]:
    run = f"lease-{time.monotonic_ns()}/table"
    return [str(tmp_path / "table"), f"s3://{s3_server['bucket']}/{run}", f"gs://{gcs_server['bucket']}/{run}"]


@pytest.mark.timeout(60)
def test_a_second_holder_is_refused_until_the_first_releases(tmp_path, s3_server, gcs_server):
    for uri in places(tmp_path, s3_server, gcs_server):
        with Lease(uri, "modules", "runs/first", ttl_s=30) as first:
            with pytest.raises(
                LeaseError, match=r"modules.lease.json: the module table is in use by runs/first \(host"
            ):
                Lease(uri, "modules", "runs/second", ttl_s=30).__enter__()
            first.check()
        with Lease(uri, "modules", "runs/second", ttl_s=30) as second:  # released: free again
            second.check()


@pytest.mark.timeout(60)
def test_a_stale_lease_is_taken_over_and_its_old_holder_notices(tmp_path, s3_server, gcs_server):
    for uri in places(tmp_path, s3_server, gcs_server):
        stalled = Lease(uri, "modules", "runs/stalled", ttl_s=0.4)
        stalled.__enter__()
        stalled._stop.set()  # its heartbeat stops, as a hung or killed job's does
        stalled._beat.join()
        stalled._stop.clear()
        time.sleep(0.6)
        with Lease(uri, "modules", "runs/next", ttl_s=0.4) as taker:
            held = json.loads(taker.store.read()[0])
            assert held["holder"] == "runs/next"
            stalled._heartbeat()  # the old holder wakes up: its next renewal finds the lease gone
            with pytest.raises(LeaseError, match="this job's lease was taken over by another job"):
                stalled.check()
            time.sleep(0.3)  # the taker's own renewals keep working
            taker.check()
        assert taker.store.read() is None  # released on exit


@pytest.mark.timeout(30)
def test_a_store_without_conditional_writes_is_refused(tmp_path):
    with pytest.raises(LeaseError, match=r"hdfs://b/t/modules.lease.json: a module table's lease needs"):
        Lease("hdfs://b/t", "modules", "runs/x")


@pytest.mark.timeout(30)
def test_a_lease_left_by_a_killed_job_on_this_host_is_free_at_once(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with Lease(str(tmp_path), "modules", "runs/killed", ttl_s=3600) as killed:
        body = json.loads(killed.store.read()[0])
    (tmp_path / "modules.lease.json").write_text(json.dumps({**body, "pid": gone.pid, "heartbeat": time.time()}))
    with Lease(str(tmp_path), "modules", "runs/killed", ttl_s=3600) as resumed:  # no wait for the hour to pass
        assert json.loads(resumed.store.read()[0])["pid"] == os.getpid()
