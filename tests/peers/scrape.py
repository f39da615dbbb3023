#!/usr/bin/env python3
"""Scrape a metrics endpoint with urllib and parse it with the official Prometheus client's
OpenMetrics parser (independent of smarthost). Prints JSON: {"samples": [[name, labels,
value], ...], "healthz": body, "healthz_status": HTTP status}.

usage: scrape.py HOST:PORT
"""
import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    base = f"http://{sys.argv[1]}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            healthz, healthz_status = response.read().decode(), response.status
    except urllib.error.HTTPError as error:  # 503: the relay cannot reach its spool
        healthz, healthz_status = error.read().decode(), error.code
    print(json.dumps({"samples": samples, "healthz": healthz, "healthz_status": healthz_status,
                      "content_type": content_type}))


if __name__ == "__main__":
    main()
