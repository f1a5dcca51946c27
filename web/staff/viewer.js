// The live viewer: receives the citizen's video + audio, sends the staff microphone,
// pushes links, ends the call. Offer: video recvonly, audio sendrecv (trickle ICE: candidates follow the offer).

import { epochMs, normalizeIceServers, trickleCandidates } from "/common/rtc.js";

const OPEN = new Set(["created", "sms_sent", "opened", "consented", "live"]);
const QUIET_RECORDING = new Set(["recording", "pending", "off", "done"]);
const STALL_MS = 3000;

export class Viewer {
  /**
   * @param {Record<string, HTMLElement>} el  viewer elements
   * @param {import("./socket.js").StaffSocket} socket
   * @param {import("./api.js").StaffApi} api
   * @param {{t: Function}} i18n
   * @param {(id: string) => void} onViewing  the viewed consultation changed ("" = none)
   */
  constructor(el, socket, api, i18n, onViewing) {
    this.el = el;
    this.socket = socket;
    this.api = api;
    this.i18n = i18n;
    this.onViewing = onViewing;
    this.id = "";
    this.pc = null;
    this.mic = null;
    this.muted = false;
    this.ended = false;
    this.stream = null;
    this.lastFrame = 0;
    this.statusKey = "";
    this.statusVars = {};
    this.iceServers = [];
    this.recordingStatus = "";
    this.stallTimer = 0;
    this.lastLinkId = ""; // id of the last link sent from this viewer
    this.delivered = new Set(); // message ids the phone acknowledged (may precede the POST answer)
    this.wire();
  }

  wire() {
    const el = this.el;
    el.close.addEventListener("click", () => this.close());
    el.mute.addEventListener("click", () => this.toggleMute());
    el.retry.addEventListener("click", () => this.negotiate());
    el.playAudio.addEventListener("click", () => {
      el.video.muted = false;
      el.video.play().then(() => { el.playAudio.hidden = true; }).catch(() => {});
    });
    el.end.addEventListener("click", () => this.endCall());
    el.linkForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.sendLink();
    });
  }

  setIceServers(list) {
    this.iceServers = normalizeIceServers(list);
  }

  // ---- status --------------------------------------------------------------------------
  setStatus(key, vars = {}) {
    this.statusKey = key;
    this.statusVars = vars;
    this.el.status.dataset.state = key;
    this.el.status.textContent = this.i18n.t(`viewer.${key}`, vars);
  }

  rerender() {
    if (this.statusKey) this.setStatus(this.statusKey, this.statusVars);
    this.el.mute.textContent = this.i18n.t(this.muted ? "viewer.unmute" : "viewer.mute");
    if (!this.el.micWarning.hidden) this.el.micWarning.textContent = this.i18n.t("viewer.no_mic");
    this.showRecording(this.recordingStatus);
    if (!this.el.linkDelivered.hidden) this.el.linkDelivered.textContent = this.i18n.t("viewer.link_delivered");
  }

  showRecording(status) {
    this.recordingStatus = status || "";
    const warn = !!status && !QUIET_RECORDING.has(status) && !this.ended;
    this.el.recordingWarning.hidden = !warn;
    if (warn) {
      this.el.recordingWarning.textContent = this.i18n.t("viewer.recording_warning", {
        status: this.i18n.t(`rec.${status}`),
      });
    }
  }

  // ---- lifecycle -----------------------------------------------------------------------
  /** Opens the viewer for consultation c (closing any other first). */
  async open(c) {
    if (this.id === c.id && this.pc && !this.ended) return;
    if (this.id) this.close();
    this.id = c.id;
    this.ended = false;
    this.el.panel.hidden = false;
    this.el.phone.textContent = c.phone_masked || "";
    this.el.end.disabled = false;
    this.el.sendLink.disabled = false;
    this.el.linkError.hidden = true;
    this.el.linkDone.hidden = true;
    this.el.linkDelivered.hidden = true;
    this.lastLinkId = "";
    this.delivered.clear();
    this.showRecording(c.recording_status);
    this.onViewing(c.id);
    this.setStatus("connecting");
    if (!this.mic) {
      try {
        this.mic = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        });
        this.el.micWarning.hidden = true;
      } catch {
        this.mic = null;
        this.el.micWarning.textContent = this.i18n.t("viewer.no_mic");
        this.el.micWarning.hidden = false;
      }
    }
    if (this.id !== c.id) return; // closed or switched while the microphone was asked for
    this.applyMute();
    await this.negotiate();
    this.el.panel.scrollIntoView({ block: "nearest" });
  }

  async negotiate() {
    const id = this.id;
    if (!id || this.ended) return;
    this.closePeer();
    this.el.retry.hidden = true;
    this.setStatus("connecting");
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    this.stream = new MediaStream();
    this.lastFrame = 0;
    this.el.video.dataset.firstFrameAt = "";
    pc.addTransceiver("video", { direction: "recvonly" });
    const micTrack = this.mic ? this.mic.getAudioTracks()[0] : null;
    if (micTrack) pc.addTransceiver(micTrack, { direction: "sendrecv", streams: [this.mic] });
    else pc.addTransceiver("audio", { direction: "sendrecv" });
    pc.addEventListener("track", (ev) => this.onTrack(ev.track));
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc !== pc) return;
      if (pc.connectionState === "failed") this.failed();
      else if (pc.connectionState === "connected" && !this.lastFrame) this.setStatus("waiting");
    });
    const startTrickle = trickleCandidates(pc, (c) => {
      if (this.pc === pc) this.socket.send({ type: "candidate", id, ...c });
    });
    let offer;
    try {
      offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
    } catch (err) {
      if (this.pc === pc) this.failed(String((err && err.message) || err));
      return;
    }
    if (this.pc !== pc) return;
    if (!this.socket.send({ type: "view", id, sdp: offer.sdp })) this.failed();
    startTrickle();
  }

  onTrack(track) {
    this.stream.addTrack(track);
    const video = this.el.video;
    if (video.srcObject !== this.stream) video.srcObject = this.stream;
    if (track.kind === "video") this.watchFrames(video);
    video.muted = false;
    video.play().catch(() => {
      // Autoplay with sound refused: play muted, offer a button for the sound.
      video.muted = true;
      video.play().catch(() => {});
      this.el.playAudio.hidden = false;
    });
  }

  watchFrames(video) {
    const pc = this.pc;
    const onFrame = () => {
      if (this.pc !== pc) return;
      if (!this.lastFrame) {
        video.dataset.firstFrameAt = String(epochMs());
      }
      this.lastFrame = performance.now();
      if (this.statusKey !== "live") this.setStatus("live");
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
    };
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(onFrame);
    } else {
      video.addEventListener("timeupdate", onFrame);
    }
    window.clearInterval(this.stallTimer);
    this.stallTimer = window.setInterval(() => {
      if (this.pc !== pc || this.ended) return;
      if (this.lastFrame && performance.now() - this.lastFrame > STALL_MS && this.statusKey === "live") {
        this.setStatus("waiting");
      }
    }, 1000);
  }

  failed(message) {
    if (this.ended) return;
    if (message) this.setStatus("error", { message });
    else this.setStatus("failed");
    this.el.retry.hidden = false;
  }

  // ---- messages from the staff socket ---------------------------------------------------
  async onAnswer(msg) {
    if (msg.id !== this.id || !this.pc || this.pc.signalingState !== "have-local-offer") return;
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (err) {
      this.failed(String((err && err.message) || err));
    }
  }

  onError(msg) {
    if (msg.id && msg.id === this.id) this.failed(msg.message || msg.error);
  }

  onEnded(msg) {
    if (msg.id === this.id) this.markEnded();
  }

  onRecording(msg) {
    if (msg.id === this.id) this.showRecording(msg.status);
  }

  /** The list changed: follow the viewed consultation's state. */
  onList(list) {
    if (!this.id) return;
    const c = list.get(this.id);
    if (!c || !OPEN.has(c.state)) {
      this.markEnded();
      return;
    }
    this.el.phone.textContent = c.phone_masked || "";
    if (c.recording_status !== this.recordingStatus) this.showRecording(c.recording_status);
  }

  /** The staff socket came back: the server forgot our viewer, offer again. */
  onSocketOpen() {
    if (this.id && !this.ended) this.negotiate();
  }

  onSocketClosed() {
    if (this.id && !this.ended) this.failed();
  }

  markEnded() {
    if (this.ended) return;
    this.ended = true;
    this.closePeer();
    this.setStatus("ended");
    this.el.retry.hidden = true;
    this.el.end.disabled = true;
    this.el.sendLink.disabled = true;
    this.el.recordingWarning.hidden = true;
  }

  // ---- actions -------------------------------------------------------------------------
  toggleMute() {
    this.muted = !this.muted;
    this.applyMute();
  }

  applyMute() {
    if (this.mic) for (const track of this.mic.getAudioTracks()) track.enabled = !this.muted;
    this.el.mute.setAttribute("aria-pressed", String(this.muted));
    this.el.mute.textContent = this.i18n.t(this.muted ? "viewer.unmute" : "viewer.mute");
  }

  async endCall() {
    if (!this.id) return;
    this.el.end.disabled = true;
    try {
      await this.api.end(this.id);
      this.markEnded();
    } catch (err) {
      this.el.end.disabled = false;
      this.failed(err.message || err.code);
    }
  }

  async sendLink() {
    const el = this.el;
    el.linkError.hidden = true;
    el.linkDone.hidden = true;
    el.linkDelivered.hidden = true;
    const url = el.linkInput.value.trim();
    if (!/^https:\/\/[^\s/]+/i.test(url)) {
      el.linkError.textContent = this.i18n.t("viewer.link_https");
      el.linkError.hidden = false;
      return;
    }
    el.sendLink.disabled = true;
    try {
      const answer = await this.api.sendLink(this.id, url, el.linkTitle.value.trim());
      el.linkDone.textContent = this.i18n.t("viewer.link_sent");
      el.linkDone.hidden = false;
      this.lastLinkId = (answer && typeof answer.id === "string") ? answer.id : "";
      this.showDelivered();
      el.linkInput.value = "";
      el.linkTitle.value = "";
    } catch (err) {
      el.linkError.textContent = err.message || this.i18n.t("network");
      el.linkError.hidden = false;
    } finally {
      el.sendLink.disabled = this.ended;
    }
  }

  /** The phone acknowledged a message (staff socket "delivered"). */
  onDelivered(msg) {
    if (msg.id !== this.id || typeof msg.message_id !== "string") return;
    this.delivered.add(msg.message_id);
    this.showDelivered();
  }

  showDelivered() {
    const el = this.el.linkDelivered;
    if (!this.lastLinkId || !this.delivered.has(this.lastLinkId)) return;
    el.dataset.messageId = this.lastLinkId;
    el.textContent = this.i18n.t("viewer.link_delivered");
    el.hidden = false;
  }

  closePeer() {
    window.clearInterval(this.stallTimer);
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.el.video.srcObject = null;
    this.el.playAudio.hidden = true;
  }

  /** Leaves the viewer (the call goes on unless ended). */
  close() {
    if (!this.id) return;
    if (!this.ended) this.socket.send({ type: "leave", id: this.id });
    this.closePeer();
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    this.mic = null;
    this.id = "";
    this.ended = false;
    this.statusKey = "";
    this.el.panel.hidden = true;
    this.onViewing("");
  }
}
