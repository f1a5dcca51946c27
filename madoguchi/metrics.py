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
SFU_RECEIVE_DROPPED = Counter(
    "madoguchi_sfu_receive_dropped_total",
    "Datagrams dropped because the SFU's receive queue was full (overload)")
SFU_CANDIDATES_REFUSED = Counter(
    "madoguchi_sfu_candidates_refused_total",
    "Remote ICE candidates the SFU did not use (reason: address, cap, transport, hostname, "
    "component, malformed)", ["reason"])

# recording
RECORDING_BYTES = Counter("madoguchi_recording_bytes_total",
                          "Encrypted segment bytes written")
RECORDING_SEGMENTS = Counter("madoguchi_recording_segments_total",
                             "Encrypted segments written")
# recorder/recorder.py failure_reason() and recorder/service.py use exactly these
RECORDING_ERROR_REASONS = ("disk_full", "unwritable", "io_error", "mux", "key", "key_store",
                           "bad_existing_recording", "internal", "size_limit")
RECORDING_ERRORS = Counter("madoguchi_recording_errors_total",
                           "Recording failures (mux, encrypt, write)", ["reason"])
RECORDING_ENCRYPT_SECONDS = Histogram(
    "madoguchi_recording_encrypt_seconds", "Time to encrypt one segment",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
RECORDING_DROPPED_PACKETS = Counter("madoguchi_recording_dropped_packets_total",
                                    "Forwarded packets the recorder could not queue")
RECORDING_ACTIVE = Gauge("madoguchi_recording_active", "Consultations being recorded")
EVENT_LOOP_TASKS = Gauge("madoguchi_event_loop_tasks",
                         "asyncio tasks on the server's event loop (leak watch: scripts/bench soak)")

# retention (the 24-hour deletion promise)
RETENTION_OLDEST_AGE = Gauge(
    "madoguchi_retention_oldest_personal_datum_age_seconds",
    "Age of the oldest personal datum still stored (0 when none)")
PERSONAL_DATA_OLDEST_AGE = Gauge(
    "madoguchi_personal_data_oldest_age_seconds",
    "Age of the oldest copy of any personal datum (store, data keys, recording folder, "
    "retention journal), measured from the call's end; must stay below 24 h")
CLOCK_STEPS = Counter(
    "madoguchi_clock_steps_total",
    "Steps of the wall clock seen by the retention daemon (kind: back or forward); a step "
    "back would delay deletions (the daemon keeps the latest time it saw)", ["kind"])
STORE_COMPACTION_FAILURES = Counter(
    "madoguchi_store_compaction_failures_total",
    "Retention runs after which the SQLite write-ahead log could not be truncated "
    "(deleted rows may remain in it)")
RETENTION_OVERDUE = Gauge("madoguchi_retention_overdue",
                          "Personal data items past their deletion deadline")
RETENTION_DELETIONS = Counter("madoguchi_retention_deletions_total",
                              "Personal data items deleted by retention", ["kind"])
RETENTION_LAST_SUCCESS = Gauge("madoguchi_retention_last_success_timestamp_seconds",
                               "Epoch seconds of the last complete retention run")
RETENTION_RUN_DURATION = Histogram("madoguchi_retention_run_duration_seconds",
                                   "Duration of one retention run (lock, deletions, sweep)",
                                   buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
RETENTION_DELETION_KINDS = ("consultation", "data_key", "recording_file", "expired_data_key",
                            "orphan_data_key", "orphan_recording", "stale_recording")

# sms
SMS_SENT = Counter("madoguchi_sms_sent_total", "SMS accepted by the gateway")
SMS_DELIVERED = Counter("madoguchi_sms_delivered_total", "SMS delivery reports: delivered")
SMS_FAILED = Counter("madoguchi_sms_failed_total", "SMS that failed (send or delivery report)",
                     ["reason"])
# = signalling.sms.interfaces.FAILURE_REASONS (tests/test_metrics_labels.py keeps them equal)
SMS_FAILURE_REASONS = ("gateway_unavailable", "gateway_auth", "gateway_rejected",
                       "invalid_recipient", "delivery_failed", "smsc_rejected", "provider_error")

# citizen links
LINK_REFUSAL_REASONS = ("expired", "used", "unknown", "rate_limited", "ended", "revoked",
                        "in_use", "not_consented")
LINK_OPENS = Counter("madoguchi_link_opens_total", "Citizen links opened")
LINK_REFUSALS = Counter("madoguchi_link_refusals_total", "Citizen links refused by reason",
                        ["reason"])

# staff security
LOGIN_RESULTS = ("success", "failure", "locked", "disabled", "rate_limited")
LOGINS = Counter("madoguchi_logins_total", "Staff login attempts by result", ["result"])
ACCOUNT_LOCKOUTS = Counter("madoguchi_account_lockouts_total",
                           "Staff accounts locked after repeated failures")
CONNECTIONS_REFUSED = Counter("madoguchi_connections_refused_total",
                              "Connections closed at once: over the site's connection caps",
                              ["site"])
STAFF_CRL_RELOADS = Counter("madoguchi_staff_crl_reloads_total",
                            "Staff CRL reloads by result (loaded, refused)", ["result"])
STAFF_CRL_REVOKED = Gauge("madoguchi_staff_crl_revoked", "Certificates on the staff CRL in force")
STAFF_CRL_NEXT_UPDATE = Gauge("madoguchi_staff_crl_next_update_timestamp_seconds",
                              "nextUpdate of the staff CRL in force (an expired CRL refuses "
                              "every staff certificate)")

# Pre-initialise bounded label values so dashboards and rate() see a 0 before the first event.
for _kind in ("audio", "video"):
    FORWARDED_PACKETS.labels(kind=_kind)
    FORWARDED_BYTES.labels(kind=_kind)
    RTX_SENT.labels(kind=_kind)
    SUBSCRIBER_LOSS.labels(kind=_kind)
    SUBSCRIBER_JITTER.labels(kind=_kind)
    SUBSCRIBER_RTT.labels(kind=_kind)
for _role in ("citizen", "staff", "review"):  # sfu/room.py, sfu/replay.py
    ACTIVE_PEERS.labels(role=_role)
for _site in ("citizen", "staff"):
    CONNECTIONS_REFUSED.labels(site=_site)
for _reason in LINK_REFUSAL_REASONS:
    LINK_REFUSALS.labels(reason=_reason)
for _reason in SMS_FAILURE_REASONS:  # increase() in alerts misses a series' first value
    SMS_FAILED.labels(reason=_reason)
for _reason in RECORDING_ERROR_REASONS:
    RECORDING_ERRORS.labels(reason=_reason)
for _result in LOGIN_RESULTS:
    LOGINS.labels(result=_result)
for _kind in RETENTION_DELETION_KINDS:
    RETENTION_DELETIONS.labels(kind=_kind)
for _kind in ("back", "forward"):
    CLOCK_STEPS.labels(kind=_kind)
for _result in ("loaded", "refused"):
    STAFF_CRL_RELOADS.labels(result=_result)
