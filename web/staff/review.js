// Recording review: the server replays a finished consultation's recording over WebRTC
// (nothing is downloaded: the video element plays a MediaStream, never a file URL).
// Controls go over the staff socket (review_control); the server reports the position
// (review_state). Deterrents: a watermark with the reviewer's name and the current time,
// no picture-in-picture, no context menu, no controls of the browser's own.

import { epochMs, iceGatheringComplete, normalizeIceServers } from "/common/rtc.js";

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

export class Review {
  /**
   * @param {Record<string, HTMLElement>} el  review elements
   * @param {import("./socket.js").StaffSocket} socket
   * @param {{t: Function, lang: Function}} i18n
   * @param {() => string} username  the reviewer, for the watermark
   * @param {(id: string) => void} onOpen  a review opened ("" = closed)
   */
  constructor(el, socket, i18n, username, onOpen) {
    this.el = el;
    this.socket = socket;
    this.i18n = i18n;
    this.username = username;
    this.onOpen = onOpen;
    this.id = "";
    this.pc = null;
    this.stream = null;
    this.iceServers = [];
    this.duration = 0;
    this.position = 0;
    this.state = "";
    this.statusKey = "";
    this.markers = [];
    this.dragging = false;
    this.ticker = 0;
    this.wire();
  }

  wire() {
    const el = this.el;
    el.video.disablePictureInPicture = true;
    el.video.controls = false;
    // No "save video as", no PiP from the context menu.
    el.box.addEventListener("contextmenu", (ev) => ev.preventDefault());
    el.video.addEventListener("enterpictureinpicture", () => {
      if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    });
    el.close.addEventListener("click", () => this.close());
    el.play.addEventListener("click", () => this.control("play"));
    el.pause.addEventListener("click", () => this.control("pause"));
    el.seek.addEventListener("input", () => {
      this.dragging = true;
      this.showPosition(Number(el.seek.value));
    });
    el.seek.addEventListener("change", () => {
      this.dragging = false;
      this.control("seek", Number(el.seek.value));
    });
  }

  setIceServers(list) {
    this.iceServers = normalizeIceServers(list);
  }

  setStatus(key, vars = {}) {
    this.statusKey = key;
    this.statusVars = vars;
    this.el.status.dataset.state = key;
    this.el.status.textContent = this.i18n.t(`review.${key}`, vars);
  }

  rerender() {
    if (this.statusKey) this.setStatus(this.statusKey, this.statusVars);
    this.renderMarkers();
    this.watermark();
  }

  /** Opens the review of consultation c (closing any other first). */
  async open(c) {
    if (this.id) this.close();
    this.id = c.id;
    this.state = "";
    this.el.video.dataset.clickedAt = String(epochMs());
    this.el.panel.hidden = false;
    this.el.phone.textContent = c.phone_masked || "";
    this.duration = 0;
    this.markers = [];
    this.renderMarkers();
    this.showDuration(0);
    this.showPosition(0);
    this.onOpen(c.id);
    this.watermark();
    window.clearInterval(this.ticker);
    this.ticker = window.setInterval(() => this.watermark(), 1000);
    await this.negotiate();
    this.el.panel.scrollIntoView({ block: "nearest" });
  }

  async negotiate() {
    const id = this.id;
    this.closePeer();
    this.setStatus("connecting");
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    this.stream = new MediaStream();
    this.el.video.dataset.firstFrameAt = "";
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" }); // the citizen
    pc.addTransceiver("audio", { direction: "recvonly" }); // the staff side of the call
    pc.addEventListener("track", (ev) => this.onTrack(ev.track));
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc === pc && pc.connectionState === "failed") this.setStatus("failed");
    });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, 5000);
    } catch (err) {
      if (this.pc === pc) this.setStatus("error", { message: String((err && err.message) || err) });
      return;
    }
    if (this.pc !== pc || this.id !== id) return;
    if (!this.socket.send({ type: "review", id, sdp: pc.localDescription.sdp })) this.setStatus("failed");
  }

  onTrack(track) {
    this.stream.addTrack(track);
    const video = this.el.video;
    if (video.srcObject !== this.stream) video.srcObject = this.stream;
    if (track.kind === "video" && video.requestVideoFrameCallback) {
      const pc = this.pc;
      video.requestVideoFrameCallback(() => {
        if (this.pc === pc && !video.dataset.firstFrameAt) video.dataset.firstFrameAt = String(epochMs());
      });
    }
    video.play().catch(() => {
      video.muted = true;
      video.play().catch(() => {});
    });
  }

  // ---- messages from the staff socket ------------------------------------------------
  async onAnswer(msg) {
    if (msg.id !== this.id || !this.pc || this.pc.signalingState !== "have-local-offer") return;
    this.showDuration(Number(msg.duration) || 0);
    this.markers = Array.isArray(msg.markers) ? msg.markers : [];
    this.renderMarkers();
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (err) {
      this.setStatus("error", { message: String((err && err.message) || err) });
    }
  }

  onState(msg) {
    if (msg.id !== this.id) return;
    this.state = msg.state;
    if (typeof msg.duration === "number") this.showDuration(msg.duration);
    if (typeof msg.position === "number" && !this.dragging) this.showPosition(msg.position);
    if (msg.state === "ended") {
      this.closePeer();
      this.setStatus("ended", { reason: this.i18n.t(`review.reason.${msg.reason || "closed"}`) });
    } else {
      this.setStatus(msg.state);
    }
    this.el.play.disabled = msg.state === "ended";
    this.el.pause.disabled = msg.state === "ended";
    this.el.seek.disabled = msg.state === "ended";
  }

  onError(msg) {
    if (msg.id !== this.id) return;
    this.setStatus("error", { message: msg.message || msg.error });
  }

  onSocketClosed() {
    // The server ends a review with its socket.
    if (this.id && this.state !== "ended") {
      this.closePeer();
      this.setStatus("ended", { reason: this.i18n.t("review.reason.disconnected") });
    }
  }

  // ---- controls ------------------------------------------------------------------------
  control(action, seconds) {
    if (!this.id) return;
    const msg = { type: "review_control", id: this.id, action };
    if (action === "seek") msg.seconds = seconds;
    this.socket.send(msg);
  }

  showPosition(seconds) {
    this.position = seconds;
    this.el.position.dataset.seconds = String(seconds);
    this.el.position.textContent = clock(seconds);
    if (!this.dragging) this.el.seek.value = String(seconds);
  }

  showDuration(seconds) {
    this.duration = seconds;
    this.el.duration.dataset.seconds = String(seconds);
    this.el.duration.textContent = clock(seconds);
    this.el.seek.max = String(seconds);
  }

  renderMarkers() {
    const box = this.el.markers;
    box.replaceChildren();
    for (const m of this.markers) {
      const at = Number(m.at) || 0;
      const mark = document.createElement("button");
      mark.type = "button";
      mark.className = `review-marker marker-${m.kind}`;
      mark.dataset.testid = "review-marker";
      mark.dataset.kind = String(m.kind);
      mark.dataset.seconds = String(at);
      mark.title = `${this.i18n.t(`review.marker.${m.kind}`)} ${clock(at)}`;
      mark.setAttribute("aria-label", mark.title);
      if (this.duration > 0) mark.style.left = `${Math.min(100, (at / this.duration) * 100)}%`;
      mark.addEventListener("click", () => this.control("seek", at));
      box.append(mark);
    }
  }

  watermark() {
    if (!this.id) return;
    const locale = this.i18n.lang() === "ja" ? "ja-JP" : "en-GB";
    const now = new Date().toLocaleString(locale, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    this.el.watermark.textContent = `${this.username()} ${now}`;
  }

  closePeer() {
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
    this.el.video.srcObject = null;
  }

  /** Stops the review (the server closes the replay and writes the audit entry). */
  close() {
    if (!this.id) return;
    if (this.state !== "ended") this.socket.send({ type: "review_close", id: this.id });
    this.closePeer();
    window.clearInterval(this.ticker);
    this.id = "";
    this.state = "";
    this.statusKey = "";
    this.el.panel.hidden = true;
    this.el.play.disabled = false;
    this.el.pause.disabled = false;
    this.el.seek.disabled = false;
    this.onOpen("");
  }
}
