"""Review of a finished consultation's recording, by WebRTC from the server.

service   who may review what, refusals, audit      session   one reviewer: cursor, pacing,
timeline  markers (links sent, reconnects, gaps)               play / pause / seek, stop

The recording is read by ``recorder.reader`` (one segment at a time, in memory) and sent
through ``sfu.replay`` (the live forwarding path). Nothing is written to disk and no HTTP
route serves recording bytes.
"""
