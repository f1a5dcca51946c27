// WebRTC helpers shared by the citizen page and the staff console.

/** Browser-usable RTCIceServer list from the server's "ice_servers" (strings or objects). */
export function normalizeIceServers(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const item of list) {
    if (typeof item === "string" && item) out.push({ urls: item });
    else if (item && (typeof item.urls === "string" || Array.isArray(item.urls))) {
      const server = { urls: item.urls };
      if (item.username) server.username = item.username;
      if (item.credential) server.credential = item.credential;
      out.push(server);
    }
  }
  return out;
}

/**
 * Trickle ICE: call before setLocalDescription; the offer (createOffer's SDP, without
 * candidates) goes at once, then every gathered candidate through
 * send({candidate, sdpMid, sdpMLineIndex}) and finally {candidate: ""} (gathering done).
 * Candidates found before the offer was sent wait for the returned start().
 */
export function trickleCandidates(pc, send) {
  const queue = [];
  let started = false;
  let done = false;
  const emit = (c) => {
    if (done) return;
    if (!c) done = true;
    send(c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
      : { candidate: "", sdpMid: null, sdpMLineIndex: 0 });
  };
  pc.addEventListener("icecandidate", (ev) => {
    const c = ev.candidate && ev.candidate.candidate ? ev.candidate : null;
    if (started) emit(c);
    else queue.push(c);
  });
  return () => {
    started = true;
    for (const c of queue.splice(0)) emit(c);
  };
}

/** Resolves when ICE gathering is complete (non-trickle signalling) or after timeoutMs. */
export function iceGatheringComplete(pc, timeoutMs = 5000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** Same-origin WebSocket URL for a path ("/ws/citizen"). */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Epoch milliseconds with sub-millisecond precision (comparable across pages). */
export function epochMs() {
  return performance.timeOrigin + performance.now();
}
