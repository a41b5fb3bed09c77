"""The bench's own parts, without engines: response framing, histograms, rate series, charts, report."""

from __future__ import annotations

import asyncio
import random

import pytest

from hsepay.bench.http import HttpResult
from hsepay.bench.httpclient import Endpoint, Pool, ProtocolError, encode_get, encode_post, parse_response
from hsepay.bench.loadgen import OpenLoop
from hsepay.bench.results import Chart, Context, Verdict
from hsepay.bench.stats import Histogram, progress_series, rate_series
from hsepay.bench.svg import histogram_svg, series_svg


def test_a_request_is_encoded_once_with_its_length_and_headers():
    endpoint = Endpoint("http://127.0.0.1:8081/orders?x=1")
    raw = encode_post(endpoint, b'{"a": 1}', {"Authorization": "Bearer t"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /orders?x=1 HTTP/1.1"
    assert b"Host: 127.0.0.1:8081" in head and b"Content-Length: 8" in head and b"Authorization: Bearer t" in head
    assert body == b'{"a": 1}'
    with pytest.raises(ValueError):
        Endpoint("https://example.com/orders")


def test_a_get_has_its_own_path_and_no_body():
    endpoint = Endpoint("http://127.0.0.1:8081/order")
    raw = encode_get(endpoint, "/order/abc", {"Authorization": "Bearer t"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"GET /order/abc HTTP/1.1"
    assert b"Content-Length" not in head and b"Content-Type" not in head and b"Authorization: Bearer t" in head
    assert body == b""


async def test_an_open_loop_never_queues_behind_a_busy_connection():
    """A server that never answers: the open loop sends one request per connection, and every
    request due after that is counted as skipped, not sent late."""
    held = []

    async def never_answer(reader, writer):
        held.append(writer)
        await reader.read()  # until the client closes

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    endpoint = Endpoint(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/order")
    loop = OpenLoop(endpoint, [encode_get(endpoint, "/order/x")], timeout=0.05, rate=1000)
    await loop.open(2)
    result = await loop.run(warmup=0.0, duration=0.1)
    assert result["statuses_total"] == {} and result["unfinished"] == 2  # both connections took one request
    assert result["skipped"] >= 1
    server.close()


def test_responses_are_framed_by_length_by_chunks_and_across_reads():
    two = bytearray(
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )
    status, body, keep_alive, used = parse_response(two)
    assert (status, body, keep_alive) == (202, b"{}", True)
    del two[:used]
    status, body, keep_alive, used = parse_response(two)
    assert (status, body, keep_alive, used) == (200, b"abcde", False, len(two))

    partial = bytearray(b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\n{}")
    assert parse_response(partial) is None
    assert parse_response(bytearray(b"HTTP/1.1 202 Acc")) is None
    assert parse_response(bytearray(b"HTTP/1.0 204 No Content\r\n\r\n"))[:3] == (204, b"", False)
    with pytest.raises(ProtocolError):
        parse_response(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(ProtocolError):
        parse_response(bytearray(b"HTTP/1.1 200 OK\r\n\r\nbody until close"))


async def test_the_pool_reuses_a_kept_alive_connection_and_reports_a_closed_one():
    connections = []

    async def serve(reader, writer):
        connections.append(writer)
        while await reader.readuntil(b"\r\n\r\n"):
            await reader.readexactly(2)
            if len(connections) == 1:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nokay")
            else:
                writer.close()  # the second connection dies without an answer
                return

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    endpoint = Endpoint(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/orders")
    pool = Pool(endpoint)
    request = encode_post(endpoint, b"{}")
    assert await pool.request(request) == (202, b"okay")
    assert await pool.request(request) == (202, b"okay")
    assert pool.opened == 1
    pool.idle.clear()  # force a second connection, which the server drops
    with pytest.raises(ConnectionError):
        await pool.request(request)
    pool.close()
    server.close()


def test_histogram_percentiles_are_within_one_percent_and_histograms_merge():
    rng = random.Random(7)
    samples = [rng.lognormvariate(-4, 0.7) for _ in range(20_000)]
    exact = sorted(samples)
    left, right = Histogram.of(samples[:5000]), Histogram.of(samples[5000:])
    left.merge(right)
    histogram = Histogram.from_json(left.to_json())
    assert histogram.count == len(samples) and histogram.max == exact[-1] and histogram.min == exact[0]
    for q in (0.5, 0.9, 0.99):
        assert histogram.percentile(q) == pytest.approx(exact[int(q * len(exact)) - 1], rel=0.011)
    assert sum(n for _, _, n in histogram.bins(30)) == len(samples)
    assert Histogram().percentile(0.5) is None and Histogram().bins() == []
    assert Histogram.of([0.01]).summary_ms()["p99_ms"] == 10.0


def test_rate_series_counts_events_per_window_and_progress_adds_them_up():
    events = [10.0, 10.05, 10.15, 10.95, 11.0, 12.5]
    assert rate_series(events, start=10.0, end=11.0, step=0.5) == [(0.5, 6.0), (1.0, 4.0)]  # 12.5 is outside
    # a 1-second window smooths: 5 events in the last second (the first point sees only its half second)
    assert rate_series(events, start=10.0, end=11.0, step=0.5, window=1.0) == [(0.5, 6.0), (1.0, 5.0)]
    assert progress_series(events, start=10.0, end=11.0, step=0.5) == [(0.0, 1.0), (0.5, 3.0), (1.0, 5.0)]


def test_charts_are_svg_with_bars_lines_and_marks():
    svg = histogram_svg(Histogram.of([0.001 * (1 + i % 50) for i in range(500)]), "latency <&>")
    assert svg.startswith("<svg") and svg.count('class="bar"') > 10 and "p99" in svg and "latency &lt;&amp;&gt;" in svg
    assert "no samples" in histogram_svg(Histogram(), "empty")
    line = series_svg({"a": [(0, 1), (1, 3)], "b": [(0, 2), (1, 2)]}, "rates", marks=[(0.5, "here")])
    assert line.count("<polyline") == 2 and "here" in line and "stroke-dasharray" in line
    assert "no data" in series_svg({}, "nothing")


def test_the_report_is_one_self_contained_file_with_the_verdict():
    from hsepay.bench.report import render

    result = HttpResult(
        context=Context("http", "every role its own process"),
        target="http://127.0.0.1:1/orders",
        connections=4,
        warmup_s=1,
        duration_s=2,
        rate=100.0,
        latency=Histogram.of([0.002, 0.003, 0.004]),
        statuses={202: 3},
        statuses_total={202: 3},
        errors={},
        errors_total={},
        clients=[],
        series={"answers (client)": [(0.0, 1.0), (0.1, 2.0)]},
        phase=None,
        verdict=Verdict(ok=False, problems=["audit: conservation: 1 violation(s)"]),
        requests=3,
    )
    html = render([result])
    assert html.startswith("<!doctype html>") and "<script" not in html and "src=" not in html
    assert "FAILED" in html and "audit: conservation" in html
    assert 'class="bar"' in html and 'class="line"' in html
    assert isinstance(result.charts()[0], Chart)
