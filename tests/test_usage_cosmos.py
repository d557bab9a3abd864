"""Usage records in Cosmos DB: day partitions, targeted reports, and what each Cosmos refusal does to a record.

The store talks to the Cosmos test server through `FaultyCosmos`, which answers
document writes with the errors real Cosmos sends (a full partition, a role
not yet granted, throttling, a document too large) while a fault is set.
"""

import asyncio
import json
import logging
import time

import pytest

from shared.cosmos import CosmosDatabase
from shared.settings import COSMOS_CONTAINERS, Settings, SettingsError
from shared.stores import cosmos_containers
from shared.usage import LOST_RECORD_MARKER, CosmosUsageStore, UsageRecorder
from tests.fakes.cosmos_faults import Fault, FaultyCosmos, partition_of
from tests.support import CosmosServer, admin_cli, create_containers

USAGE = Settings().cosmos_usage_container_id


@pytest.fixture(scope="module")
def faulty(cosmos):
    proxy = FaultyCosmos(cosmos.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def database_id(request, faulty):
    faulty.faults.clear()
    faulty.requests.clear()
    faulty.refused.clear()
    name = f"usage-{request.node.name}"[:60].replace("[", "-").replace("]", "").replace("/", "-")

    create_containers(faulty.url, name)
    return name


def record(number, project="team-a", timestamp="2026-11-30T10:00:00.000000Z"):
    return {
        "id": f"r{number}",
        "request_id": f"q{number}",
        "project": project,
        "model": "m",
        "timestamp": timestamp,
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "cost": 0.5,
    }


def stored(cosmos, database_id):
    from azure.cosmos import CosmosClient

    container = (
        CosmosClient(cosmos.url, credential=CosmosServer.KEY, connection_verify=False)
        .get_database_client(database_id)
        .get_container_client(USAGE)
    )
    return {item["id"]: item for item in container.query_items("SELECT * FROM c", enable_cross_partition_query=True)}


def lost_records(caplog):
    return [r.getMessage() for r in caplog.records if LOST_RECORD_MARKER in r.getMessage()]


async def until(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run_with_store(faulty, database_id, scenario):
    async def main():
        database = CosmosDatabase(faulty.url, CosmosServer.KEY, database_id, verify_tls=False)
        try:
            return await scenario(CosmosUsageStore(database, USAGE))
        finally:
            await database.close()

    return asyncio.run(main())


def test_one_projects_records_of_two_months_land_in_two_partitions_and_one_report_reads_them(
    cosmos, faulty, database_id
):
    records = [
        record(1, timestamp="2026-11-30T23:59:59.999999Z"),
        record(2, timestamp="2026-12-01T00:00:00.000000Z"),
        record(3, timestamp="2026-12-01T08:00:00.000000Z"),
        record(4, project="team-b", timestamp="2026-12-01T08:00:00.000000Z"),
        record(5, timestamp="2026-12-05T00:00:00.000000Z"),  # after the report's end
    ]

    async def scenario(store):
        await store.write(records)
        faulty.requests.clear()
        return await store.query("team-a", "2026-11-29T00:00:00.000000Z", "2026-12-05T00:00:00.000000Z")

    report = run_with_store(faulty, database_id, scenario)
    assert sorted(r["id"] for r in report) == ["r1", "r2", "r3"]

    documents = stored(cosmos, database_id)
    assert documents["r1"]["partition"] == "team-a|2026-11-30"
    assert documents["r2"]["partition"] == documents["r3"]["partition"] == "team-a|2026-12-01"
    assert documents["r4"]["partition"] == "team-b|2026-12-01"

    # One targeted query per day of the period, never a cross-partition scan.
    queries = faulty.queries()
    assert sorted(partition_of(q) for q in queries) == [f"team-a|2026-{day}" for day in ("11-29", "11-30")] + [
        f"team-a|2026-12-0{day}" for day in range(1, 5)
    ]
    assert not any(q.headers.get("x-ms-documentdb-query-enablecrosspartition") for q in queries)


@pytest.mark.parametrize(
    ("status", "substatus"),
    [(403, 1014), (403, 5301), (429, 3200)],
    ids=["partition-full", "role-not-yet-granted", "throttled"],
)
def test_a_full_partition_a_missing_role_and_throttling_keep_records_until_cosmos_takes_them(
    cosmos, faulty, database_id, caplog, status, substatus
):
    async def scenario(store):
        recorder = UsageRecorder(store, retry_initial_seconds=0.005, retry_max_seconds=0.02, max_attempts=2)
        faulty.faults.append(Fault(status, substatus))
        for number in range(3):
            recorder.record(record(number))
        # Far more refused writes than a bounded retry would make before giving up on a record.
        await until(lambda: len(faulty.refused) >= 60)
        pending = recorder.pending
        faulty.faults.clear()
        await until(lambda: recorder.pending == 0)
        return pending

    with caplog.at_level(logging.WARNING):
        assert run_with_store(faulty, database_id, scenario) == 3
    assert sorted(stored(cosmos, database_id)) == ["r0", "r1", "r2"]
    assert lost_records(caplog) == []
    assert any(f"{status}/{substatus}" in r.getMessage() for r in caplog.records)


def test_a_full_partition_holds_up_no_other_partition(cosmos, faulty, database_id):
    async def scenario(store):
        recorder = UsageRecorder(store, retry_initial_seconds=0.005, retry_max_seconds=0.02)
        faulty.faults.append(Fault(403, 1014, partition="busy|2026-11-30"))
        recorder.record(record(1, project="busy"))
        for number in range(2, 6):
            recorder.record(record(number))
        await until(lambda: recorder.pending == 1)  # the other four are written meanwhile
        await until(lambda: len(faulty.refused) >= 5)  # and the waiting one is retried
        faulty.faults.clear()
        await until(lambda: recorder.pending == 0)

    run_with_store(faulty, database_id, scenario)
    assert sorted(stored(cosmos, database_id)) == ["r1", "r2", "r3", "r4", "r5"]


@pytest.mark.parametrize(
    ("status", "meaning"), [(400, "malformed"), (413, "larger than Cosmos takes")], ids=["bad-request", "too-large"]
)
def test_a_record_cosmos_will_never_take_is_dropped_and_logged_and_the_others_written(
    cosmos, faulty, database_id, caplog, status, meaning
):
    async def scenario(store):
        recorder = UsageRecorder(store, retry_initial_seconds=0.005, retry_max_seconds=0.02)
        faulty.faults.append(Fault(status, document_id="r2"))
        for number in range(1, 4):
            recorder.record(record(number))
        await until(lambda: recorder.pending == 0)

    with caplog.at_level(logging.ERROR):
        run_with_store(faulty, database_id, scenario)
    assert sorted(stored(cosmos, database_id)) == ["r1", "r3"]
    [lost] = lost_records(caplog)
    assert f"answered {status}/0" in lost and meaning in lost
    assert json.loads(lost[lost.index("): {") + 3 :]) == record(2)  # the whole record, recoverable


def test_a_record_already_written_counts_as_written(cosmos, faulty, database_id, caplog):
    """A write whose answer was lost is retried; Cosmos then answers 409, and the record is not logged as lost."""

    async def scenario(store):
        recorder = UsageRecorder(store, retry_initial_seconds=0.005)
        faulty.faults.append(Fault(409, document_id="r1"))
        recorder.record(record(1))
        recorder.record(record(2))
        await until(lambda: recorder.pending == 0)

    with caplog.at_level(logging.ERROR):
        run_with_store(faulty, database_id, scenario)
    assert lost_records(caplog) == []
    assert sorted(stored(cosmos, database_id)) == ["r2"]


def admin(env, *arguments):
    return admin_cli(env, *arguments).stdout


def container_properties(cosmos, database_id, container_id):
    from azure.cosmos import CosmosClient

    client = CosmosClient(cosmos.url, credential=CosmosServer.KEY, connection_verify=False)
    return client.get_database_client(database_id).get_container_client(container_id).read()


@pytest.mark.parametrize(("retention", "ttl"), [("30", 30 * 86400), ("", None)], ids=["30-days", "forever"])
def test_created_containers_carry_the_retention_and_the_indexing_policy(cosmos, tmp_path, retention, ttl):
    database_id = f"containers-{tmp_path.name}"[:60]
    env = cosmos.settings(database_id) | {"USAGE_RETENTION_DAYS": retention}
    output = admin(env, "cosmos", "create-containers")
    assert f"{USAGE}: created" in output

    usage = container_properties(cosmos, database_id, USAGE)
    assert usage["partitionKey"]["paths"] == [COSMOS_CONTAINERS[USAGE]] == ["/partition"]
    assert usage.get("defaultTtl") == ttl
    policy = usage["indexingPolicy"]
    assert {"path": "/*"} in policy["excludedPaths"]
    assert sorted(path["path"] for path in policy["includedPaths"]) == ["/partition/?", "/timestamp/?"]
    for catalog in ("models", "projects"):
        assert container_properties(cosmos, database_id, catalog)["partitionKey"]["paths"] == ["/id"]

    assert f"{USAGE}: exists, left as it is" in admin(env, "cosmos", "create-containers")


def test_records_of_the_former_container_are_copied_into_day_partitions_once(cosmos, tmp_path):
    database_id = f"copy-{tmp_path.name}"[:60]
    env = cosmos.settings(database_id)
    admin(env, "cosmos", "create-containers")
    old = [record(1), record(2, timestamp="2026-12-01T00:00:00.000000Z"), record(3, project="team-b")]
    cosmos.seed(database_id, "usage", "/project", old)

    assert "copied 3 usage records from usage into usage-by-day" in admin(env, "usage", "copy", "usage")
    assert "copied 3 usage records" in admin(env, "usage", "copy", "usage")  # again: nothing twice
    documents = stored(cosmos, database_id)
    assert {key: documents[key]["partition"] for key in documents} == {
        "r1": "team-a|2026-11-30",
        "r2": "team-a|2026-12-01",
        "r3": "team-b|2026-11-30",
    }


@pytest.mark.parametrize(("value", "ttl"), [("30", 30 * 86400), ("0", None), ("", None), (" 365 ", 365 * 86400)])
def test_usage_retention_days_sets_the_usage_containers_ttl(value, ttl):
    containers = cosmos_containers(Settings.from_environment({"USAGE_RETENTION_DAYS": value}))
    assert {c.id: c.default_ttl for c in containers} == {
        "models": None,
        "projects": None,
        USAGE: ttl,
        # The limit counters: TTL on, no default (each counter document carries its own `ttl`).
        Settings().cosmos_limits_container_id: -1,
        "responses": 30 * 86400,
    }


@pytest.mark.parametrize("value", ["1.5", "-3", "a month"])
def test_a_retention_that_is_not_a_whole_number_of_days_is_refused_naming_the_setting(value):
    with pytest.raises(SettingsError, match="USAGE_RETENTION_DAYS"):
        Settings.from_environment({"USAGE_RETENTION_DAYS": value})
