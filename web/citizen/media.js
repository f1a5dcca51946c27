// Camera and microphone: rear camera first, fallbacks for browsers and fake devices
// that report no facing mode, and the front/rear switch.

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 15, max: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** True when this browser can do the call at all. */
export function mediaSupported() {
  return typeof window.RTCPeerConnection === "function" &&
    !!(navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function");
}

function isOverconstrained(err) {
  return !!err && (err.name === "OverconstrainedError" || err.name === "ConstraintNotSatisfiedError");
}

/** Which citizen screen a getUserMedia failure needs. */
export function classifyMediaError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "PermissionDeniedError" || name === "SecurityError") return "denied";
  if (name === "NotFoundError" || name === "DevicesNotFoundError" || isOverconstrained(err)) return "no_camera";
  if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") return "camera_busy";
  return "error";
}

export class Camera {
  constructor() {
    /** @type {MediaStream|null} */
    this.stream = null;
    this.facing = "environment";
  }

  /** Opens the rear camera (ideal, not exact) and the microphone. */
  async open() {
    this.stop();
    const md = navigator.mediaDevices;
    try {
      this.stream = await md.getUserMedia({ video: { ...VIDEO, facingMode: { ideal: "environment" } }, audio: AUDIO });
    } catch (err) {
      if (!isOverconstrained(err)) throw err;
      this.stream = await md.getUserMedia({ video: true, audio: true });
    }
    this.facing = this.videoTrack()?.getSettings().facingMode || "environment";
    return this.stream;
  }

  videoTrack() { return this.stream ? this.stream.getVideoTracks()[0] || null : null; }
  audioTrack() { return this.stream ? this.stream.getAudioTracks()[0] || null : null; }

  /** True with two or more cameras (labels are known after permission). */
  async canSwitch() {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      return devices.filter((d) => d.kind === "videoinput").length >= 2;
    } catch {
      return false;
    }
  }

  /** Switches front/rear; returns the new video track. The old track is stopped first
   *  because many phones cannot open two cameras at once. */
  async switch() {
    const md = navigator.mediaDevices;
    const old = this.videoTrack();
    const oldId = old ? old.getSettings().deviceId : undefined;
    const wanted = this.facing === "user" ? "environment" : "user";
    if (old) {
      old.stop();
      this.stream.removeTrack(old);
    }
    let track = null;
    try {
      track = (await md.getUserMedia({ video: { ...VIDEO, facingMode: { exact: wanted } } })).getVideoTracks()[0];
      this.facing = wanted;
    } catch (err) {
      if (!isOverconstrained(err)) {
        await this.reopen(oldId);
        throw err;
      }
      const cams = (await md.enumerateDevices()).filter((d) => d.kind === "videoinput");
      const idx = cams.findIndex((d) => d.deviceId === oldId);
      const next = cams[(idx + 1) % cams.length];
      try {
        track = (await md.getUserMedia({ video: { ...VIDEO, deviceId: { exact: next.deviceId } } })).getVideoTracks()[0];
      } catch (err2) {
        await this.reopen(oldId);
        throw err2;
      }
      this.facing = track.getSettings().facingMode || (this.facing === "user" ? "environment" : "user");
    }
    this.stream.addTrack(track);
    return track;
  }

  async reopen(deviceId) {
    const video = deviceId ? { ...VIDEO, deviceId: { exact: deviceId } } : { ...VIDEO };
    const track = (await navigator.mediaDevices.getUserMedia({ video })).getVideoTracks()[0];
    this.stream.addTrack(track);
    return track;
  }

  setMuted(muted) {
    const audio = this.audioTrack();
    if (audio) audio.enabled = !muted;
  }

  stop() {
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
  }
}
