"""Offer checking and answer touch-ups, done on the SDP text before aiortc sees it.

- size limit and a clear :class:`SfuError` for anything aiortc cannot parse;
- remote candidates pass the SFU's candidate policy (sfu/candidates.py: no mDNS names,
  no private/loopback/link-local/multicast addresses unless allowed, at most N per
  section); refusals are counted by reason;
- a section that listed candidates gets ``a=end-of-candidates`` (the browser gathered
  before offering); a section without any is left open for trickled candidates;
- the codec check says which codec is missing instead of aiortc's generic error;
- 1:1 NAT: private host addresses in the answer are replaced by public ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import filter_preferred_codecs, find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from madoguchi.metrics import SFU_CANDIDATES_REFUSED

from .candidates import CandidatePolicy, SectionBudget
from .codecs import preferences
from .interfaces import SfuError

MAX_SDP_BYTES = 65536


@dataclass
class MediaSummary:
    kind: str
    mid: str
    direction: str


@dataclass
class OfferSummary:
    media: list[MediaSummary] = field(default_factory=list)
    has_datachannel: bool = False

    def kinds(self) -> list[str]:
        return [m.kind for m in self.media]


def sanitize_offer(text: object, budget: SectionBudget | None = None) -> str:
    """Return the offer with only the candidates the policy admits (counted in
    ``budget``, keyed by section index) and end-of-candidates markers."""
    budget = budget or SectionBudget(CandidatePolicy())
    if not isinstance(text, str) or not text.strip():
        raise SfuError("the offer is empty or not text")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SfuError("the offer is too large")
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    section_has_candidates = False
    section_has_end = False
    section = -1

    def close_section() -> None:
        if section_has_candidates and not section_has_end:
            out.append("a=end-of-candidates")

    for line in lines:
        if not line:
            continue
        if line.startswith("m="):
            close_section()
            section_has_candidates = section_has_end = False
            section += 1
        elif line.startswith("a=candidate:"):
            section_has_candidates = True
            reason = budget.admit(str(section), line)
            if reason is not None:
                SFU_CANDIDATES_REFUSED.labels(reason=reason).inc()
                continue
        elif line.startswith("a=end-of-candidates"):
            section_has_end = True
        out.append(line)
    close_section()
    return "\r\n".join(out) + "\r\n"


def parse_offer(text: str) -> aiortc_sdp.SessionDescription:
    try:
        return aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises assorted errors on bad input
        raise SfuError("the offer is not valid SDP") from exc


def summarize(desc: aiortc_sdp.SessionDescription) -> OfferSummary:
    summary = OfferSummary()
    for media in desc.media:
        if media.kind in ("audio", "video"):
            summary.media.append(MediaSummary(media.kind, str(media.rtp.muxId),
                                              str(media.direction)))
        elif media.kind == "application":
            summary.has_datachannel = True
    return summary


def check_codecs(desc: aiortc_sdp.SessionDescription, video_codec: str) -> None:
    """Refuse an offer whose media sections share no codec with this room."""
    for media in desc.media:
        if media.kind not in ("audio", "video"):
            continue
        if media.port == 0:  # rejected/disabled section
            continue
        prefs: list[RTCRtpCodecCapability] = preferences(media.kind, video_codec, rtx=False)
        common = filter_preferred_codecs(find_common_codecs(CODECS[media.kind],
                                                            media.rtp.codecs), prefs)
        if not common:
            wanted = "Opus" if media.kind == "audio" else (
                "VP8" if video_codec == "VP8" else "H.264 constrained baseline "
                "(42e01f, packetization-mode=1)")
            offered = sorted({c.mimeType.split("/")[-1] for c in media.rtp.codecs
                              if c.mimeType.split("/")[-1].lower() not in
                              ("rtx", "red", "ulpfec", "flexfec-03")})
            raise SfuError(f"the offer's {media.kind} has no {wanted} (offered: "
                           f"{', '.join(offered) or 'nothing usable'}); this room "
                           f"uses {wanted}")


def check_ice(desc: aiortc_sdp.SessionDescription) -> None:
    for media in desc.media:
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise SfuError("the offer has no ICE credentials")
        if not media.dtls or not media.dtls.fingerprints:
            raise SfuError("the offer has no DTLS fingerprint")
        if media.kind in ("audio", "video") and not media.rtcp_mux:
            raise SfuError("the offer does not use rtcp-mux")


def rewrite_answer_addresses(text: str, mapping: dict[str, str]) -> str:
    """Replace private host candidate addresses by public ones (1:1 NAT)."""
    if not mapping:
        return text
    out = []
    for line in text.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            if len(parts) >= 5 and parts[4] in mapping:
                parts[4] = mapping[parts[4]]
                line = " ".join(parts)
        elif line.startswith("c=IN IP"):
            parts = line.split(" ")
            if len(parts) == 3 and parts[2] in mapping:
                parts[2] = mapping[parts[2]]
                line = " ".join(parts)
        out.append(line)
    return "\r\n".join(out)
