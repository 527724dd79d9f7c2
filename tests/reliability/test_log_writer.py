"""The request-log writer thread: rows queued off the request thread, written in bulk, retried
across an outage, spilled at exit and read back at the next start, drops counted."""

import json
import time

import pytest
from django.db import connection

from reporting.log_writer import RequestLogWriter, _row_record
from reporting.models import RequestLog
from reporting.services import RequestOutcome, request_log_build
from tests.support.db import request_log_locked
from tests.support.metrics import samples_sum
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quick(settings, tmp_path):
    settings.REQUEST_LOG_QUEUE = True
    settings.REQUEST_LOG_RETRY_SECONDS = 0.05
    settings.REQUEST_LOG_MAX_BACKOFF = 0.1
    settings.REQUEST_LOG_FLUSH_SECONDS = 0.5
    settings.REQUEST_LOG_SPILL_DIR = tmp_path / "spill"
    return settings


def row(index: int, **fields) -> RequestLog:
    outcome = RequestOutcome(request_id=f"w-{index}", status_code=200, processing_time=0.01)
    for name, value in fields.items():
        setattr(outcome, name, value)
    return request_log_build(outcome=outcome)


def metric(name: str, **labels) -> float:
    from core.metrics import exposition

    return samples_sum(exposition().decode(), name, labels)


def test_queued_rows_are_written_in_bulk_and_flushed_on_stop(quick):
    writer = RequestLogWriter()
    writer.start()
    for index in range(300):
        assert writer.put(row(index))
    writer.stop(timeout=10)
    assert RequestLog.objects.count() == 300
    assert (writer.written, writer.dropped, writer.spilled) == (300, 0, 0)


def test_the_writer_waits_for_a_batch_to_fill_and_a_full_batch_goes_at_once(quick):
    quick.REQUEST_LOG_BATCH_SIZE = 5
    quick.REQUEST_LOG_LINGER_SECONDS = 30.0  # far longer than the test: only a full batch writes
    writer = RequestLogWriter()
    writer.start()
    try:
        assert writer.put(row(0))
        time.sleep(0.3)
        assert writer.written == 0  # lingering for more rows, not inserting one
        for index in range(1, 5):
            assert writer.put(row(index))
        wait_for(lambda: writer.written == 5, timeout=10)  # the fifth row woke it
        assert RequestLog.objects.count() == 5
    finally:
        writer.stop(timeout=5)


def test_a_batch_that_does_not_fill_is_written_when_the_linger_ends(quick):
    quick.REQUEST_LOG_LINGER_SECONDS = 0.2
    writer = RequestLogWriter()
    writer.start()
    try:
        assert writer.put(row(0)) and writer.put(row(1))
        wait_for(lambda: writer.written == 2)
        assert RequestLog.objects.count() == 2
    finally:
        writer.stop(timeout=5)


def test_rows_survive_an_outage_and_are_written_when_the_database_returns(quick):
    writer = RequestLogWriter()
    writer.start()
    with connection.cursor() as cursor:  # a real database error for the writer: no table
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    try:
        for index in range(50):
            writer.put(row(index))
        wait_for(lambda: writer.written == 0 and len(writer) == 50, timeout=2)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    wait_for(lambda: RequestLog.objects.count() == 50)
    writer.stop(timeout=5)
    assert (writer.written, writer.dropped) == (50, 0)


def test_a_full_queue_drops_and_counts(quick):
    quick.REQUEST_LOG_QUEUE_SIZE = 10
    writer = RequestLogWriter()
    before = metric("classifier_request_log_dropped_total", reason="queue_full")
    with request_log_locked():  # the writer cannot insert: the queue fills
        writer.start()
        accepted = [writer.put(row(index)) for index in range(25)]
        assert accepted.count(True) == 10 and writer.dropped == 15
        assert metric("classifier_request_log_dropped_total", reason="queue_full") == before + 15
    writer.stop(timeout=30)
    assert RequestLog.objects.count() == 10


def test_what_a_stopping_writer_cannot_write_is_spilled_and_read_back_at_the_next_start(quick):
    writer = RequestLogWriter()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    try:
        writer.start()
        for index in range(40):
            writer.put(row(index, image_url=f"http://images.test/{index}"))
        writer.stop(timeout=0.3)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    assert writer.spilled == 40 and RequestLog.objects.count() == 0
    assert len(list(quick.REQUEST_LOG_SPILL_DIR.glob("*.jsonl"))) == 1

    restarted = RequestLogWriter()
    restarted.start()
    wait_for(lambda: RequestLog.objects.count() == 40)
    restarted.stop(timeout=5)
    assert restarted.replayed == 40
    assert not list(quick.REQUEST_LOG_SPILL_DIR.iterdir())
    stored = RequestLog.objects.get(request_id="w-7")
    assert stored.image_url == "http://images.test/7" and stored.status_code == 200


def test_a_reused_request_id_in_a_batch_keeps_both_rows(quick):
    writer = RequestLogWriter()
    writer.start()
    writer.put(row(1))
    writer.put(row(1))
    writer.stop(timeout=5)
    ids = sorted(RequestLog.objects.values_list("request_id", flat=True))
    assert len(ids) == 2 and ids[0] == "w-1" and ids[1].startswith("w-1-")


def test_a_row_written_in_bulk_reads_back_as_one_saved_by_itself(quick, django_user_model):
    from classification.results import ClassificationResult, Prediction, TagPrediction
    from reporting.log_writer import request_log_save

    user = django_user_model.objects.create_user(username="alice", password="a long pass 7")
    result = ClassificationResult(
        predictions=[Prediction(label="tabby", confidence=0.75)],
        model_name="garments",
        model_version=3,
        image_sha256="ab" * 32,
        cached=True,
        cache_kind="url",
        processing_time=0.0123,
        input_stats={"width": 640, "height": 480, "brightness": 101.5},
        tags=[TagPrediction(label="striped", probability=0.91, present=True)],
    )
    fields = {
        "result": result,
        "input_kind": "url",
        "image_url": "http://images.test/é?x=1",
        "user": user,
        "client_address": "192.0.2.7",
    }
    writer = RequestLogWriter()
    writer.start()
    writer.put(row(1, **fields))
    writer.stop(timeout=5)
    request_log_save(row=row(2, **fields))

    def stored(request_id: str) -> dict:
        values = RequestLog.objects.filter(request_id=request_id).values().get()
        return {k: v for k, v in values.items() if k not in ("id", "request_id", "created_at")}

    bulk, alone = stored("w-1"), stored("w-2")
    assert bulk == alone
    assert bulk["tags"] == [{"label": "striped", "probability": 0.91, "present": True}]
    assert bulk["user_id"] == user.pk and bulk["cache_kind"] == "url"
    created = RequestLog.objects.get(request_id="w-1").created_at
    assert created.tzinfo is not None and abs(time.time() - created.timestamp()) < 60


def test_rows_of_an_outage_are_on_disk_as_they_come_so_a_killed_worker_loses_none(quick):
    """While the database does not answer, every row goes to the worker's outage file as it is
    put. A SIGKILL closes the worker's files (its lock with them) and nothing else: here the
    file is closed as the kernel would, then a new writer finds the orphaned file and writes
    it. A live worker's outage file (still locked) is left alone."""
    writer = RequestLogWriter()
    writer.start()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    try:
        writer.put(row(0))
        wait_for(lambda: writer._outage is not None, timeout=5)  # the first batch failed
        for index in range(1, 30):
            writer.put(row(index))
        assert len(writer) == 0 and writer.spilled == 30  # none held in memory
        (outage,) = quick.REQUEST_LOG_SPILL_DIR.glob("*.jsonl.outage")
        assert len(outage.read_text().splitlines()) == 30
        other = RequestLogWriter()
        other._replay_spilled()  # another worker, alive: the file is locked, not its to take
        assert other.replayed == 0 and outage.exists()
        # SIGKILL: the worker's thread and memory are gone, its file descriptors closed.
        writer._stopping = True
        writer._outage.close()
        writer._outage = None
        with outage.open("a") as file:
            file.write('{"request_id": "w-tru')  # killed in the middle of a line
        # And a worker killed while it was writing a spill file it had taken (its lock gone).
        taken = quick.REQUEST_LOG_SPILL_DIR / "1-999999-abcdef01.jsonl.999999.claimed"
        lines = [json.dumps(_row_record(row(index))) for index in range(30, 35)]
        taken.write_text("\n".join(lines) + "\n")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    restarted = RequestLogWriter()
    restarted.start()
    wait_for(lambda: RequestLog.objects.count() == 35)
    restarted.stop(timeout=5)
    assert restarted.replayed == 35
    assert not list(quick.REQUEST_LOG_SPILL_DIR.iterdir())


def test_an_outage_ends_by_itself_when_the_database_answers_again(quick):
    writer = RequestLogWriter()
    writer.start()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    try:
        for index in range(20):
            writer.put(row(index))
        wait_for(lambda: writer._outage is not None, timeout=5)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    wait_for(lambda: RequestLog.objects.count() == 20 and writer._outage is None)
    writer.put(row(20))  # queued again, not spilled
    wait_for(lambda: RequestLog.objects.count() == 21)
    writer.stop(timeout=5)
    assert writer.dropped == 0
    assert not list(quick.REQUEST_LOG_SPILL_DIR.iterdir())


def test_a_spill_file_the_database_refuses_is_given_back_until_it_answers(quick):
    folder = quick.REQUEST_LOG_SPILL_DIR
    folder.mkdir(parents=True)
    spilled = folder / "1-4242-00000000.jsonl"
    spilled.write_text("".join(json.dumps(_row_record(row(i))) + "\n" for i in range(12)))
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE reporting_requestlog RENAME TO reporting_requestlog_away")
    writer = RequestLogWriter()
    try:
        writer.start()
        wait_for(lambda: writer._outage is not None, timeout=5)  # the start's write refused
        assert spilled.exists()  # given back, not lost in memory
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reporting_requestlog_away RENAME TO reporting_requestlog")
    wait_for(lambda: RequestLog.objects.count() == 12)
    writer.stop(timeout=5)
    assert writer.replayed == 12 and not list(folder.iterdir())
