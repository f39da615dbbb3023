#!/usr/bin/env python3
"""Scrape a metrics endpoint with urllib and parse it with the official Prometheus client's
OpenMetrics parser (independent of smarthost). Prints JSON: {"samples": [[name, labels,
value], ...], "healthz": body}.

usage: scrape.py HOST:PORT
"""
import json
import sys
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
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        healthz = response.read().decode()
    print(json.dumps({"samples": samples, "healthz": healthz, "content_type": content_type}))


if __name__ == "__main__":
    main()
