"""The SFU: forwards the citizen's RTP packets to staff viewers and the staff audio floor
holder's packets to the citizen, without decoding or re-encoding (aiortc 1.16.0 hooks).

Entry points: ``sfu.sfu.LocalSfu(config.sfu)`` (the :class:`sfu.interfaces.Sfu`),
``sfu.loop.install_uvloop(config.sfu.use_uvloop)`` before the event loop starts.

One concept per module:
interfaces  the API signalling/ and recorder/ use        sfu, room   rooms by consultation
peer        one RTCPeerConnection, the SFU's way         sdp         offer checks, NAT answer
publisher   a received stream (RR/REMB/NACK/PLI up)      subscriber  an outgoing leg (history,
track       fan-out, canonical numbering, sinks                      SR, NACK/PLI handling)
rewriter    seq/timestamp offsets                        rtphistory  retransmission ring
keyframe    VP8/H.264 keyframe detection                 keyframerequest  PLI rate limit
floor       who the citizen hears                        rtcpstats   RR statistics, NTP
fastpath    decrypted RTP bytes -> streams               hooks       every private aiortc hook
ice         host addresses, ICE servers, sockets         codecs      codec preferences
latency     forwarding delay probe (bench)               loop        uvloop
"""
