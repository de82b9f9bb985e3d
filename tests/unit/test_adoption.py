"""The adoption decision a re-executed daemon makes for each replica record, and the handover's own flag."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from serving.platform.local.forkserver import ZygoteHandover
from serving.platform.local.handover import HANDOVER_FLAG, Handover
from serving.platform.local.orphans import Adoption, ProcessRecord, ReplicaOwner, adoption_for, load_record, record_process

OWNER = ReplicaOwner("default", "iris-predictor", "abc123")


def own_record(owner: ReplicaOwner | None = OWNER) -> ProcessRecord:
    """A record of a live process that runs as recorded: this test's own."""
    return replace(ProcessRecord.of(os.getpid()), owner=owner, ports=((8080, 41000),), ready_url="http://127.0.0.1:41000/")


def test_a_live_replica_of_the_same_deployment_and_template_is_adopted() -> None:
    assert adoption_for(own_record(), OWNER) is Adoption.ADOPT


def test_a_pid_now_naming_another_process_is_not_adopted() -> None:
    record = own_record()
    assert adoption_for(replace(record, create_time=record.create_time - 100.0), OWNER) is Adoption.PID_REUSED
    assert adoption_for(replace(record, cmdline=["python", "-m", "other"], exe="/usr/bin/other"), OWNER) is Adoption.PID_REUSED


def test_a_replica_of_another_template_is_not_adopted() -> None:
    assert adoption_for(own_record(), replace(OWNER, template_hash="def456")) is Adoption.TEMPLATE_CHANGED


def test_a_replica_of_another_deployment_or_without_an_owner_is_not_adopted() -> None:
    assert adoption_for(own_record(), replace(OWNER, deployment="other")) is Adoption.OTHER_OWNER
    assert adoption_for(own_record(), replace(OWNER, namespace="other")) is Adoption.OTHER_OWNER
    assert adoption_for(own_record(owner=None), OWNER) is Adoption.OTHER_OWNER


def test_a_process_that_is_gone_is_not_adopted() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert adoption_for(replace(own_record(), pid=pid_max + 1), OWNER) is Adoption.GONE


def test_a_record_keeps_what_adoption_needs_and_old_records_still_load(tmp_path: Path) -> None:
    record_process(tmp_path, os.getpid(), OWNER, {8080: 41000, 5557: 41001}, "http://127.0.0.1:41000/v2/health/ready")
    loaded = load_record(tmp_path)
    assert loaded is not None
    assert loaded.owner == OWNER and loaded.port_map() == {8080: 41000, 5557: 41001}
    assert loaded.ready_url == "http://127.0.0.1:41000/v2/health/ready"
    old = ProcessRecord(loaded.pid, loaded.pgid, loaded.create_time, loaded.cmdline, loaded.exe)
    old.save(tmp_path / "process.json")
    (tmp_path / "process.json").write_text((tmp_path / "process.json").read_text().replace(', "owner": null', ""))
    again = load_record(tmp_path)
    assert again is not None and again.owner is None and adoption_for(again, OWNER) is Adoption.OTHER_OWNER


def test_the_handover_flag_round_trips_and_refuses_anything_else() -> None:
    handover = Handover(5, 6, 7, ZygoteHandover(1234, 8, '{"pid": 9', True, ("sklearn",)))
    assert Handover.from_arg(handover.to_arg()) == handover
    assert handover.fds() == [5, 6, 7, 8]
    assert Handover.from_arg(Handover(5, 6, 7, None).to_arg()).zygote is None
    with pytest.raises(ValueError, match=HANDOVER_FLAG):
        Handover.from_arg('{"gateway_fd": 5}')
    with pytest.raises(ValueError, match="never by hand"):
        Handover.from_arg("not json")


def test_the_handover_carries_the_parked_client_connections_and_refuses_bad_numbers() -> None:
    handover = Handover(5, 6, 7, None, (9, 10, 11))
    assert Handover.from_arg(handover.to_arg()) == handover
    assert handover.fds() == [5, 6, 7, 9, 10, 11]  # every one kept open across the exec
    # An image from before client connections were handed over wrote no list: none to adopt.
    assert Handover.from_arg('{"gateway_fd": 5, "api_fd": 6, "lock_fd": 7, "zygote": null}').client_fds == ()
    base = {"gateway_fd": 5, "api_fd": 6, "lock_fd": 7, "zygote": None}
    for bad in ("9", [-1], [True], ["9"], [9.5], None):
        with pytest.raises(ValueError, match="client_fds must be a list of descriptor numbers"):
            Handover.from_arg(json.dumps({**base, "client_fds": bad}))
