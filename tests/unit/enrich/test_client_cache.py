import random
from email.utils import formatdate

from lorafleet.services.enrich.cache import AnswerCache
from lorafleet.services.enrich.client import Completion, backoff_delay, chat_url, parse_retry_after


def test_chat_url_accepts_the_usual_spellings():
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", "http://h:8000/v1/chat/completions"):
        assert chat_url(base) == "http://h:8000/v1/chat/completions"


def test_retry_after_seconds_date_and_garbage():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert abs(parse_retry_after(formatdate(now + 10, usegmt=True), now=now) - 10) < 1.0
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now=now) == 0.0


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after():
    rng = random.Random(0)
    for attempt in range(10):
        d = backoff_delay(attempt, 0.5, 8.0, rng=rng)
        assert 0.0 <= d <= min(8.0, 0.5 * 2**attempt)
    delays = {round(backoff_delay(3, 0.5, 8.0, rng=rng), 6) for _ in range(20)}
    assert len(delays) > 10  # jitter: no thundering herd
    assert backoff_delay(0, 0.5, 8.0, retry_after=4.0, rng=rng) >= 4.0


def test_cache_survives_reopen(tmp_path):
    with AnswerCache.in_data_dir(tmp_path) as cache:
        cache.put("k1", "m", Completion("why", "stop", {"completion_tokens": 3}))
        assert cache.get("missing") is None
    with AnswerCache.in_data_dir(tmp_path) as cache:
        assert cache.get("k1") == Completion("why", "stop", {"completion_tokens": 3})
        assert len(cache) == 1 and cache.keys() == {"k1"}


def test_answers_are_committed_in_groups_and_on_close(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = AnswerCache(path, commit_every=3, commit_interval_s=60)
    other = AnswerCache(path)  # another process's view
    cache.put("a", "m", Completion("x", "stop"))
    cache.put("b", "m", Completion("x", "stop"))
    assert cache.get("a") is not None and other.get("a") is None  # written, not yet committed
    cache.put("c", "m", Completion("x", "stop"))
    assert other.keys() == {"a", "b", "c"}
    cache.put("d", "m", Completion("x", "stop"))
    cache.flush()
    assert "d" in other.keys()
    cache.put("e", "m", Completion("x", "stop"))
    cache.close()
    assert "e" in other.keys()
    other.close()
