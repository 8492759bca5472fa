"""Reads a /metrics body on stdin with the reference Prometheus client's parser and
prints every sample as JSON lines: {"name", "labels", "value", "type"}.

Usage: parse_metrics.py openmetrics|text
openmetrics: the strict OpenMetrics 1.0 parser (counters end in _total, # EOF at the end)
text: the Prometheus text format 0.0.4 parser
"""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

parse = openmetrics_families if sys.argv[1] == "openmetrics" else text_families
for family in parse(sys.stdin.read()):
    for sample in family.samples:
        print(
            json.dumps(
                {
                    "name": sample.name,
                    "labels": sample.labels,
                    "value": sample.value,
                    "type": family.type,
                }
            )
        )
