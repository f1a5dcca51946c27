"""All Prometheus metrics in one place, so the dashboard and alerts have one source.

Labels are bounded enumerations (state, ward, kind, reason): never a phone number, a
token or a consultation id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# calls
CONSULTATIONS = Gauge("madoguchi_consultations", "Consultations in the store by state and ward",
                      ["state", "ward"])
CONSULTATIONS_CREATED = Counter("madoguchi_consultations_created_total",
                                "Consultations created", ["ward"])
CLICK_TO_FIRST_FRAME = Histogram(
    "madoguchi_click_to_first_frame_seconds",
    "From the citizen's start to the first video frame forwarded to a viewer",
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))

# sfu
ACTIVE_PEERS = Gauge("madoguchi_sfu_active_peers", "Connected peers", ["role"])
FORWARDED_PACKETS = Counter("madoguchi_sfu_forwarded_packets_total",
                            "RTP packets forwarded", ["kind"])
FORWARDED_BYTES = Counter("madoguchi_sfu_forwarded_bytes_total",
                          "RTP payload bytes forwarded", ["kind"])
KEYFRAME_REQUESTS = Counter("madoguchi_sfu_keyframe_requests_total",
                            "Keyframe requests relayed upstream", ["reason"])
RTX_SENT = Counter("madoguchi_sfu_retransmissions_total",
                   "Packets retransmitted to subscribers from the history", ["kind"])
SUBSCRIBER_LOSS = Histogram("madoguchi_sfu_subscriber_loss_ratio",
                            "Fraction lost reported by subscribers (RTCP RR)", ["kind"],
                            buckets=(0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1))
SUBSCRIBER_JITTER = Histogram("madoguchi_sfu_subscriber_jitter_seconds",
                              "Interarrival jitter reported by subscribers", ["kind"],
                              buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5))
SUBSCRIBER_RTT = Histogram("madoguchi_sfu_rtt_seconds", "Round-trip time from RTCP", ["kind"],
                           buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1))
SFU_ERRORS = Counter("madoguchi_sfu_errors_total", "Refused or failed SFU operations",
                     ["reason"])
