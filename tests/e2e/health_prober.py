"""`python health_prober.py PORT INTERVAL`: GET /v1/health every INTERVAL seconds until SIGTERM, then print
{"latencies": [...], "failures": [...]} as JSON. A process of its own, so its timings are the server's,
not the load generator's."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time


def main() -> None:
    port, interval = int(sys.argv[1]), float(sys.argv[2])
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    latencies: list[float] = []
    failures: list[str] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    next_probe = time.monotonic()
    while not stopped:
        next_probe += interval
        started = time.perf_counter()
        try:
            connection.request("GET", "/v1/health")
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200 or json.loads(body) != {"status": "OK"}:
                failures.append(f"{response.status} {body!r}")
        except OSError as exc:
            failures.append(repr(exc))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        time.sleep(max(0.0, next_probe - time.monotonic()))
    print(json.dumps({"latencies": latencies, "failures": failures}))


if __name__ == "__main__":
    main()
