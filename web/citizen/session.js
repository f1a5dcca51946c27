// One signalling + WebRTC session of the citizen: /ws/citizen, non-trickle offer,
// camera video + microphone audio sent, staff audio received, data channel "madoguchi".
// A lost connection is reported once (onLost); the page decides whether to reconnect.

import { iceGatheringComplete, normalizeIceServers, wsUrl } from "/common/rtc.js";

const CONNECT_TIMEOUT_MS = 25000;
const DISCONNECTED_GRACE_MS = 4000;

/**
 * @typedef {object} SessionHandlers
 * @property {() => void} onLive          ICE + DTLS connected
 * @property {(msg: {type: string, id?: string}) => void} onMessage  a staff message
 *           ({type: "link", id, url, title}); may come twice (socket + data channel)
 * @property {(reason: string) => void} onEnded   the call is over (either side)
 * @property {(reason: string) => void} onLost    connection lost: reconnect may help
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
          await this.offer(msg.ice_servers);
          break;
        case "answer":
          if (this.pc && typeof msg.sdp === "string") {
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

  async offer(iceServers) {
    const pc = new RTCPeerConnection({ iceServers: normalizeIceServers(iceServers) });
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
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc, 5000);
    if (this.closed) return;
    this.send({ type: "offer", sdp: pc.localDescription.sdp });
  }

  onConnectionState() {
    if (this.closed || !this.pc) return;
    const state = this.pc.connectionState;
    if (state === "connected") {
      if (!this.live) {
        this.live = true;
        this.h.onLive();
      }
    } else if (state === "failed") {
      this.lost("ice_failed");
    } else if (state === "disconnected") {
      this.later(() => {
        if (this.pc && this.pc.connectionState !== "connected") this.lost("ice_disconnected");
      }, DISCONNECTED_GRACE_MS);
    }
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
