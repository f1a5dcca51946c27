// One signalling + WebRTC session of the citizen: /ws/citizen, trickle ICE (offer at
// once, candidates after it), camera video + microphone audio sent, staff audio
// received, data channel "madoguchi".
// A media path that drops (ICE disconnected: Wi-Fi <-> LTE, a tunnel) is reported with
// onReconnecting; if it does not come back by itself within RENEGOTIATE_AFTER_MS, or ICE
// fails, the session offers a new peer connection on the SAME socket (the server has no
// ICE restart: aiortc cannot restart ICE, so a fresh peer replaces the old one in the
// room, numbering continuous, no new consent, staff viewers untouched). Only when the
// socket itself is lost is onLost reported; the page then opens a new session.

import { normalizeIceServers, trickleCandidates, wsUrl } from "/common/rtc.js";

const CONNECT_TIMEOUT_MS = 25000;
const RENEGOTIATE_AFTER_MS = 3000;
// ICE says "disconnected" only after several seconds; the SFU sends something (staff
// audio, RTCP at least every 1.5 s) all the time, so silence this long means the path dropped.
const SILENT_MS = 2000;
const WATCH_MS = 500;
// An offer unanswered this long: the socket is dead though not closed (a phone that
// changed networks keeps a half-open TCP connection): open a new session instead.
const ANSWER_TIMEOUT_MS = 8000;
const MAX_RENEGOTIATIONS = 3; // in a row without getting connected: give up the socket too

/**
 * @typedef {object} SessionHandlers
 * @property {() => void} onLive          ICE + DTLS connected
 * @property {(msg: {type: string, id?: string}) => void} onMessage  a staff message
 *           ({type: "link", id, url, title}); may come twice (socket + data channel)
 * @property {(reason: string) => void} onEnded   the call is over (either side)
 * @property {(reason: string) => void} onLost    connection lost: reconnect may help
 * @property {() => void} [onReconnecting]  the media path dropped; recovering by itself
 * @property {(recording: boolean) => void} [onReady]
 */

export class CallSession {
  /**
   * @param {string} signallingToken  JWT from /api/citizen/consent or /reconnect
   * @param {MediaStream} localStream camera + microphone
   * @param {MediaStream} remoteStream receives the staff's audio track
   * @param {SessionHandlers} handlers
   */
  constructor(signallingToken, localStream, remoteStream, handlers) {
    this.signallingToken = signallingToken;
    this.localStream = localStream;
    this.remoteStream = remoteStream;
    this.h = handlers;
    this.ws = null;
    this.pc = null;
    this.dc = null;
    this.closed = false;
    this.live = false;
    this.timers = new Set();
    this.iceServers = [];
    this.reconnecting = false;
    this.renegotiations = 0;
    this.renegotiateTimer = 0;
    this.awaitingAnswer = false;
    this.offering = false;
    this.rxBytes = -1;
    this.rxAt = 0;
  }

  start() {
    this.ws = new WebSocket(wsUrl("/ws/citizen"));
    this.ws.addEventListener("open", () => {
      this.send({ type: "auth", token: this.signallingToken });
      this.signallingToken = "";
    });
    this.ws.addEventListener("message", (ev) => this.onMessage(ev.data));
    this.ws.addEventListener("close", () => this.lost("signalling_closed"));
    this.ws.addEventListener("error", () => this.lost("signalling_error"));
    this.later(() => { if (!this.live) this.lost("timeout"); }, CONNECT_TIMEOUT_MS);
    this.watchTimer = setInterval(() => this.watchPath(), WATCH_MS);
  }

  /** Notices a silent path before ICE does, and its return. */
  async watchPath() {
    const pc = this.pc;
    if (this.closed || !pc || !this.live) return;
    let bytes = 0;
    try {
      (await pc.getStats()).forEach((s) => { if (s.type === "transport") bytes += s.bytesReceived || 0; });
    } catch {
      return;
    }
    if (pc !== this.pc || this.closed) return;
    const now = performance.now();
    if (bytes !== this.rxBytes) {
      const wasSilent = this.rxBytes >= 0 && now - this.rxAt > SILENT_MS;
      this.rxBytes = bytes;
      this.rxAt = now;
      if (wasSilent && this.reconnecting && pc.connectionState === "connected") this.onConnectionState();
    } else if (now - this.rxAt > SILENT_MS && !this.reconnecting) {
      this.pathDropped();
    }
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  later(fn, ms) {
    const id = setTimeout(() => { this.timers.delete(id); if (!this.closed) fn(); }, ms);
    this.timers.add(id);
    return id;
  }

  async onMessage(data) {
    if (this.closed) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    try {
      switch (msg.type) {
        case "ready":
          if (this.h.onReady) this.h.onReady(!!msg.recording);
          this.iceServers = msg.ice_servers;
          await this.offer();
          break;
        case "answer":
          this.awaitingAnswer = false;
          if (this.pc && this.pc.signalingState === "have-local-offer" && typeof msg.sdp === "string") {
            await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
          }
          break;
        case "ended":
          this.finish(msg.reason || "ended");
          break;
        case "error":
          this.lost(`server_${msg.error || "error"}`);
          break;
        default:
          // Staff messages ({type, id, ...}: "link", later others) carry an id.
          if (typeof msg.id === "string" || msg.type === "link") this.deliver(msg);
          break;
      }
    } catch (err) {
      this.lost(`webrtc_${(err && err.name) || "error"}`);
    }
  }

  async offer() {
    this.offering = true;
    try {
      await this.makeOffer();
    } finally {
      this.offering = false;
    }
  }

  async makeOffer() {
    const pc = new RTCPeerConnection({ iceServers: normalizeIceServers(this.iceServers) });
    this.pc = pc;
    for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    this.dc = pc.createDataChannel("madoguchi");
    this.dc.addEventListener("message", (ev) => {
      try {
        const msg = JSON.parse(ev.data);
        if (msg && msg.type === "ended") this.finish(msg.reason || "ended");
        else if (msg && (typeof msg.id === "string" || msg.type === "link")) this.deliver(msg);
      } catch {
        /* not JSON: ignore */
      }
    });
    pc.addEventListener("track", (ev) => {
      if (ev.track.kind === "audio") {
        for (const old of this.remoteStream.getAudioTracks()) this.remoteStream.removeTrack(old);
        this.remoteStream.addTrack(ev.track);
      }
    });
    pc.addEventListener("connectionstatechange", () => { if (this.pc === pc) this.onConnectionState(); });
    const startTrickle = trickleCandidates(pc, (c) => {
      if (this.pc === pc) this.send({ type: "candidate", ...c });
    });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.closed || this.pc !== pc) return;
    this.awaitingAnswer = this.send({ type: "offer", sdp: offer.sdp });
    startTrickle();
    this.later(() => {
      if (this.pc === pc && this.awaitingAnswer) this.lost("no_answer");
    }, ANSWER_TIMEOUT_MS);
  }

  onConnectionState() {
    if (this.closed || !this.pc) return;
    const state = this.pc.connectionState;
    if (state === "connected") {
      clearTimeout(this.renegotiateTimer);
      this.renegotiations = 0;
      if (!this.live || this.reconnecting) {
        this.live = true;
        this.reconnecting = false;
        this.h.onLive();
      }
    } else if (state === "failed") {
      this.renegotiate("ice_failed");
    } else if (state === "disconnected" && this.live) {
      this.pathDropped();
    }
  }

  /** The media path dropped: say so, give ICE a moment to come back by itself. */
  pathDropped() {
    if (!this.reconnecting) {
      this.reconnecting = true;
      if (this.h.onReconnecting) this.h.onReconnecting();
    }
    clearTimeout(this.renegotiateTimer);
    this.renegotiateTimer = this.later(() => {
      // Still silent (or ICE down): a phone that changed networks will not get the old
      // path back; do not wait for ICE to declare failure (tens of seconds).
      if (this.reconnecting) this.renegotiate("path_lost");
    }, RENEGOTIATE_AFTER_MS);
  }

  /** The network changed (online / connection change): renegotiate now if the path is down. */
  networkChanged() {
    if (this.closed || !this.pc || !this.live) return;
    if (this.reconnecting && this.pc.connectionState !== "connected") this.renegotiate("network_change");
  }

  /** A new peer connection offered on the same socket (no ICE restart on the server). */
  renegotiate(reason) {
    if (this.closed) return;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN
        || this.renegotiations >= MAX_RENEGOTIATIONS) {
      this.lost(reason);
      return;
    }
    if (this.offering || this.awaitingAnswer) return; // an offer is on its way; its timers decide
    this.renegotiations += 1;
    this.rxBytes = -1;
    if (!this.reconnecting) {
      this.reconnecting = true;
      if (this.h.onReconnecting) this.h.onReconnecting();
    }
    clearTimeout(this.renegotiateTimer);
    const old = this.pc;
    this.pc = null;
    this.dc = null;
    try { if (old) old.close(); } catch { /* already closed */ }
    this.offer().catch((err) => this.lost(`webrtc_${(err && err.name) || "error"}`));
    // Still not connected after a while (the path is still down): try again, then give up.
    this.renegotiateTimer = this.later(() => {
      if (!this.pc || this.pc.connectionState !== "connected") {
        this.awaitingAnswer = false;
        this.offering = false;
        this.renegotiate(reason);
      }
    }, CONNECT_TIMEOUT_MS / 2);
  }

  /** A staff message from either path: acknowledged on the socket (every copy, so a
   * repeat after a reconnect is acknowledged too), shown once by the page (by id). */
  deliver(msg) {
    this.h.onMessage(msg);
    if (typeof msg.id === "string") this.send({ type: "ack", id: msg.id });
  }

  /** Replaces the camera track on the video sender (front/rear switch). */
  async replaceVideoTrack(track) {
    if (!this.pc) return;
    const sender = this.pc.getSenders().find((s) => s.track === null || (s.track && s.track.kind === "video"));
    if (sender) await sender.replaceTrack(track);
  }

  /** Asks the server to end the call; "ended" follows. False if signalling is down. */
  end() {
    return this.send({ type: "end" });
  }

  lost(reason) {
    if (this.closed) return;
    this.close();
    this.h.onLost(reason);
  }

  finish(reason) {
    if (this.closed) return;
    this.close();
    this.h.onEnded(reason);
  }

  /** Closes everything without reporting (the local stream stays open). */
  close() {
    this.closed = true;
    clearInterval(this.watchTimer);
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    if (this.ws) {
      try { this.ws.close(); } catch { /* already closed */ }
    }
    if (this.pc) {
      try { this.pc.close(); } catch { /* already closed */ }
    }
  }
}
