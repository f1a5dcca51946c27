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
