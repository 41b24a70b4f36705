"""LLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (good, flaky, down, unauthorized, garbage)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gemma4_saelens_ext.behavior.judges import DECEPTIVE, HONEST, UNLABELLED, JudgeItem, make_judges
from gemma4_saelens_ext.behavior.llm_judge import LLMJudge, LLMJudgeConfig
from gemma4_saelens_ext.behavior.scenarios import load_scenarios

KEY = "sk-test-SECRET-0123456789"


class FakeLLM:
    """A tiny chat-completions server. ``fail_first`` requests fail with ``fail_status`` (or garbage, or a dropped
    connection with ``drop``); ``retry_after`` is sent as the Retry-After header of failures."""

    def __init__(
        self,
        fail_first: int = 0,
        fail_status: int = 500,
        garbage: bool = False,
        drop: bool = False,
        retry_after: str | None = None,
    ):
        self.fail_first, self.fail_status, self.garbage, self.drop = fail_first, fail_status, garbage, drop
        self.retry_after = retry_after
        self.times: list[float] = []
        self.requests: list[dict] = []
        self.auth: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization", ""))
                outer.times.append(time.monotonic())
                assert self.path == "/v1/chat/completions"
                n = len(outer.requests)
                if n <= outer.fail_first:
                    if outer.drop:  # close the connection without an answer
                        self.close_connection = True
                        return
                    if outer.garbage:
                        return self._send(200, {"choices": [{"message": {"content": "I cannot comply."}}]})
                    # echo the key back to check that the judge redacts it from logs
                    return self._send(outer.fail_status, {"error": f"boom (you sent {self.headers['Authorization']})"})
                lines = body["messages"][1]["content"].split("\n")[1:]
                labels = []
                for line in lines:
                    item = json.loads(line)
                    role = item["honest_if"].split()[-1].lower()
                    labels.append({"id": item["id"], "label": HONEST if role in item["completion"].lower() else DECEPTIVE})
                content = "```json\n" + json.dumps({"labels": labels}) + "\n```"
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400 and outer.retry_after:
                    self.send_header("Retry-After", outer.retry_after)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


P = {p.id: p for p in load_scenarios(["slug_snail"])}
ITEMS = [
    JudgeItem(f"k{i}", P["slug_snail.assigned.team.slug"], "I'm a Slug.'" if i % 3 else "I'm a Snail.'")
    for i in range(23)
]
EXPECTED = [HONEST if i % 3 else DECEPTIVE for i in range(23)]


def judge(url, **kw):
    kw = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5, **kw}
    cfg = LLMJudgeConfig(base_url=url, model="fake-1", api_key=KEY, **kw)
    return LLMJudge(cfg, name="llm_fake")


def test_batches_of_10_and_labels(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeLLM() as srv:
        j = judge(srv.url)
        assert j.label(ITEMS) == EXPECTED
    sizes = [len(r["messages"][1]["content"].split("\n")) - 1 for r in srv.requests]
    assert sizes == [10, 10, 3]
    assert all(r["model"] == "fake-1" for r in srv.requests)
    assert srv.auth == [f"Bearer {KEY}"] * 3
    assert KEY not in caplog.text and KEY not in repr(j.config) and KEY not in json.dumps(j.settings())


def test_flaky_server_is_retried(caplog):
    caplog.set_level(logging.INFO)
    with FakeLLM(fail_first=2, fail_status=503) as srv:
        j = judge(srv.url, max_retries=3)
        assert j.label(ITEMS[:10]) == EXPECTED[:10]
    assert len(srv.requests) == 3
    assert "retry 1/3" in caplog.text and "retry 2/3" in caplog.text
    assert KEY not in caplog.text and "***" in caplog.text  # the echoed key was redacted


def test_server_down_marks_unlabelled_and_goes_on(caplog):
    with FakeLLM(fail_first=10**6, fail_status=500) as srv:
        j = judge(srv.url, max_retries=2)
        labels = j.label(ITEMS[:15])
    assert labels == [UNLABELLED] * 15
    assert len(srv.requests) == 2 * 3  # two batches, three attempts each
    assert j.n_failed_batches == 2
    assert "marking it unlabelled" in caplog.text and KEY not in caplog.text


def test_unauthorized_is_not_retried_and_disables_judge(caplog):
    with FakeLLM(fail_first=10**6, fail_status=401) as srv:
        j = judge(srv.url, max_retries=3)
        labels = j.label(ITEMS)
    assert labels == [UNLABELLED] * len(ITEMS)
    assert len(srv.requests) == 1
    assert "GEMMA4_SAE_JUDGE_API_KEY" in (j.disabled_reason or "")
    assert KEY not in caplog.text


def test_garbage_reply_is_retried_then_parsed():
    with FakeLLM(fail_first=1, garbage=True) as srv:
        assert judge(srv.url).label(ITEMS[:4]) == EXPECTED[:4]
    assert len(srv.requests) == 2


def test_unreachable_server():
    j = judge("http://127.0.0.1:9/v1", max_retries=1)  # discard port: connection refused
    assert j.label(ITEMS[:2]) == [UNLABELLED, UNLABELLED]


def test_env_configuration(monkeypatch):
    with FakeLLM() as srv:
        monkeypatch.setenv("GEMMA4_SAE_JUDGE_API_KEY", KEY)
        monkeypatch.setenv("GEMMA4_SAE_JUDGE_BASE_URL", "http://wrong.invalid/v1")
        monkeypatch.setenv("GEMMA4_SAE_JUDGE_FAKE_BASE_URL", srv.url)
        monkeypatch.setenv("GEMMA4_SAE_JUDGE_FAKE_MODEL", "fake-2")
        judges, skipped = make_judges("keyword,llm:fake")
        assert not skipped
        j = judges[1]
        assert j.name == "llm_fake" and j.config.model == "fake-2" and j.config.batch_size == 10
        assert j.label(ITEMS[:3]) == EXPECTED[:3]


def test_dropped_connections_retried_then_answered(caplog):
    """A server that drops the connection twice (no HTTP answer at all), then answers: the batch is labelled."""
    caplog.set_level(logging.INFO)
    with FakeLLM(fail_first=2, drop=True) as srv:
        j = judge(srv.url, max_retries=2)
        assert j.label(ITEMS[:10]) == EXPECTED[:10]
    assert len(srv.requests) == 3 and j.n_failed_batches == 0 and j.disabled_reason is None
    assert caplog.text.count("unreachable") == 2 and "retry 2/2" in caplog.text


def test_retry_after_is_honoured():
    """429 with Retry-After: 0.3 waits at least 0.3 s although the backoff is 0.01 s."""
    with FakeLLM(fail_first=1, fail_status=429, retry_after="0.3") as srv:
        j = judge(srv.url, max_retries=1, max_backoff_s=5)
        assert j.label(ITEMS[:3]) == EXPECTED[:3]
    assert len(srv.times) == 2 and srv.times[1] - srv.times[0] >= 0.3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_judge_api_down_disables_judge_with_a_clear_reason(caplog):
    """Nothing listens at the URL: after max_failed_batches failed batches the judge stops asking, says why, and
    its samples stay unlabelled (a build goes on with the other judges)."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    j = judge(url, max_retries=1, max_failed_batches=2)
    assert j.label(ITEMS) == [UNLABELLED] * len(ITEMS)  # 3 batches: 2 fail, the third is not sent
    assert j.n_requests == 2 * 2 and j.n_failed_batches == 2
    reason = j.disabled_reason or ""
    assert "2 batches in a row failed" in reason and url in reason and "unreachable" in reason
    assert "GEMMA4_SAE_JUDGE_BASE_URL" in reason and "--resume" in reason
    assert "disabled" in caplog.text and KEY not in caplog.text


def test_server_errors_everywhere_disable_after_consecutive_failures():
    with FakeLLM(fail_first=10**6, fail_status=503) as srv:
        j = judge(srv.url, max_retries=1)  # default max_failed_batches=3
        assert j.label(ITEMS) == [UNLABELLED] * len(ITEMS)
        assert len(srv.requests) == 3 * 2 and "HTTP 503" in (j.disabled_reason or "")
        # a success resets the count: two failed batches then a good one leave the judge enabled
    with FakeLLM(fail_first=4, fail_status=503) as srv:
        j = judge(srv.url, max_retries=1)
        assert j.label(ITEMS) == [UNLABELLED] * 20 + EXPECTED[20:]
        assert j.disabled_reason is None and j.n_failed_batches == 2


def test_url_without_scheme_disables_at_once():
    j = judge("api.example.invalid/v1", max_retries=3)
    assert j.label(ITEMS[:12]) == [UNLABELLED] * 12
    assert j.n_requests == 1 and "GEMMA4_SAE_JUDGE_BASE_URL" in (j.disabled_reason or "")
