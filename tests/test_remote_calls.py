"""Remote judge and LLM calls: a total deadline per request, a size cap on answers, API keys never stored,
and benchmark verdicts written as they are made so an interrupted run resumes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from revise_core.evaluation import protocol, rve
from revise_core.evaluation.judge import Judge, OpenAIJudge
from revise_core.llm import LLMError, OpenAIChat

KEY = "sk-secret-0123456789"


class _Misbehaving(BaseHTTPRequestHandler):
    mode = "trickle"

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "echo-key":  # a 401 whose body repeats the credentials it was sent
            body = json.dumps({"error": f"invalid key {self.headers['Authorization']}"}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            if self.mode == "trickle":  # one byte at a time, never finishing
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:  # an endless answer
                for _ in range(2000):
                    self.wfile.write(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _chat(url, **kwargs):
    return OpenAIChat(base_url=url, model="m", api_key=KEY, retries=0, **kwargs)


def test_a_trickling_server_hits_the_total_deadline(server):
    httpd, url = server
    _Misbehaving.mode = "trickle"
    start = time.monotonic()
    with pytest.raises(LLMError, match="within the 1 s deadline"):
        _chat(url, timeout=1.0).complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 3.0  # urllib's per-read timeout would have waited 20 s


def test_answers_have_a_size_cap(server):
    httpd, url = server
    _Misbehaving.mode = "endless"
    with pytest.raises(LLMError, match="exceeds 1048576 bytes"):
        _chat(url, timeout=30.0, max_bytes=2**20).complete([{"role": "user", "content": "hi"}])


def test_the_api_key_never_reaches_errors_reports_or_logs(server, tmp_path, caplog):
    httpd, url = server
    _Misbehaving.mode = "echo-key"
    with pytest.raises(LLMError) as error:
        _chat(url, timeout=5.0).complete([{"role": "user", "content": "hi"}])
    assert KEY not in str(error.value) and "[redacted]" in str(error.value)
    from revise_core.video import synthetic_clip, write_video

    clip = synthetic_clip(5, 32, 32).frames
    write_video(tmp_path / "s.mp4", clip)
    (tmp_path / "pred").mkdir()
    write_video(tmp_path / "pred" / "a.mp4", clip)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "source": "s.mp4", "instruction": "x",
                                                  "subset": "ICVG"}) + "\n")
    assert rve.main(["--manifest", str(tmp_path / "m.jsonl"), "--predictions", f"ours={tmp_path / 'pred'}",
                     "--judge", "openai", "--judge-url", url, "--judge-key", KEY, "--retries", "0",
                     "--judge-timeout", "5", "--out", str(tmp_path / "report")]) == 0
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "report").rglob("*") if p.is_file()
                      and p.suffix in (".md", ".jsonl", ".csv", ".json"))
    assert "HTTP 401" in written and KEY not in written and KEY not in caplog.text


class _Counting(Judge):
    name = "counting"

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(retries=0)
        self.calls, self.stop_after = 0, stop_after

    def ask(self, metric, instruction, source, edited):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return json.dumps({"score": 3 + len(metric), "reason": metric})


def test_an_interrupted_benchmark_resumes_from_its_journal(tmp_path):
    from revise_core.manifest import read_manifest
    from revise_core.video import synthetic_clip, write_video

    clip = synthetic_clip(5, 32, 32).frames
    rows = []
    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4", clip)
        rows.append({"id": name, "source": f"{name}.mp4", "instruction": "x", "subset": "RAVE"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    triplets = read_manifest(tmp_path / "m.jsonl", min_frames=1, require_target=False)
    predictions = {"ours": tmp_path}
    journal = tmp_path / "report" / "verdicts.jsonl"
    with pytest.raises(KeyboardInterrupt):
        protocol.evaluate(triplets, predictions, _Counting(stop_after=5), journal=journal)
    assert len(journal.read_text().splitlines()) == 1 + 5  # header + the five verdicts made before the stop
    resumed_judge = _Counting()
    samples, records = protocol.evaluate(triplets, predictions, resumed_judge, journal=journal)
    assert resumed_judge.calls == 8 - 5  # RAVE: EA, PC, GN, GR for two samples
    fresh, _ = protocol.evaluate(triplets, predictions, _Counting())
    assert [s.metrics for s in samples] == [s.metrics for s in fresh]
    other = _Counting()
    other.name = "another-judge"
    protocol.evaluate(triplets, predictions, other, journal=journal)
    assert other.calls == 8  # another judge's verdicts are never reused


def test_openai_judge_identity_names_its_model():
    judge = OpenAIJudge(base_url="http://127.0.0.1:9/v1", model="judge-x", api_key=KEY, num_frames=3)
    assert judge.identity() == {"backend": "openai", "url": "http://127.0.0.1:9/v1", "model": "judge-x",
                                "frames": 3, "max_tokens": 200}
