// The citizen page: consent → camera preview → call, with clear screens for every failure.
// The link token is read from location.pathname, sent only in POST bodies, never logged.

import { bindLangSwitch, createI18n } from "/common/i18n.js";
import { ApiError, citizenApi, tokenFromPath } from "/citizen/api.js";
import { Camera, classifyMediaError, mediaSupported } from "/citizen/media.js";
import { CallSession } from "/citizen/session.js";
import { STRINGS } from "/citizen/strings.js";

const TOKEN_FRESH_MS = 4 * 60 * 1000; // signalling JWTs live ≤ 5 min
const MAX_FAILED_SESSIONS = 5;

const i18n = createI18n(STRINGS, "ja");
const $ = (id) => document.getElementById(id);

const el = {
  status: $("status"),
  consent: $("screen-consent"),
  call: $("screen-call"),
  message: $("screen-message"),
  messageBody: $("message-body"),
  messageAction: $("message-action"),
  accept: $("consent-accept"),
  termRecording: $("term-recording"),
  termDevice: $("term-device"),
  preview: $("local-preview"),
  liveBadge: $("live-badge"),
  audio: $("staff-audio"),
  start: $("start-call"),
  enableAudio: $("enable-audio"),
  controls: $("controls"),
  mute: $("mute"),
  switchCam: $("switch-camera"),
  end: $("end-call"),
  links: $("links"),
  linkList: $("link-list"),
};

const state = {
  token: tokenFromPath(),
  statusKey: "loading",
  bodyKey: "",
  actionKey: "",
  action: null,
  lifetime: 30,
  recording: true,
  resume: false, // this device already consented (reload / come back)
  signalling: "",
  signallingAt: 0,
  session: null,
  muted: false,
  everLive: false,
  over: false, // ended, expired or refused: nothing more to do
  failedSessions: 0,
  seen: new Set(), // ids of staff messages already shown (two paths, re-sends)
  reconnectTimer: 0,
  backoff: 1000,
  wakeLock: null,
};

const camera = new Camera();
const remoteStream = new MediaStream();

// ---- rendering -------------------------------------------------------------------------

function setStatus(key) {
  state.statusKey = key;
  el.status.dataset.state = key;
  el.status.textContent = i18n.t(`status.${key}`);
}

function showScreen(name) {
  el.consent.hidden = name !== "consent";
  el.call.hidden = name !== "call";
  el.message.hidden = name !== "message";
}

/** A full-page message (ended, refused, denied …) with an optional action button. */
function showMessage(key, { body = key, actionKey = "", action = null } = {}) {
  setStatus(key);
  state.bodyKey = body;
  state.actionKey = actionKey;
  state.action = action;
  renderMessage();
  showScreen("message");
}

function renderMessage() {
  el.messageBody.textContent = state.bodyKey ? i18n.t(`body.${state.bodyKey}`) : "";
  el.messageAction.hidden = !state.action;
  if (state.actionKey) el.messageAction.textContent = i18n.t(state.actionKey);
}

function renderDynamic() {
  el.status.textContent = i18n.t(`status.${state.statusKey}`);
  renderMessage();
  el.termRecording.textContent = i18n.t(state.recording ? "consent.recording" : "consent.no_recording");
  el.termDevice.textContent = i18n.t("consent.device", { minutes: state.lifetime });
  el.start.textContent = i18n.t(state.resume ? "call.resume" : "call.start");
  el.mute.textContent = i18n.t(state.muted ? "call.unmute" : "call.mute");
  for (const open of el.linkList.querySelectorAll(".link-open")) open.textContent = i18n.t("links.open");
}

// ---- helpers ---------------------------------------------------------------------------

/** Starts the <audio> element inside a user gesture so Safari lets it play staff audio later. */
function unlockAudio() {
  if (el.audio.srcObject !== remoteStream) el.audio.srcObject = remoteStream;
  const p = el.audio.play();
  if (p && typeof p.catch === "function") p.catch(() => {});
}

function playStaffAudio() {
  const p = el.audio.play();
  if (p && typeof p.then === "function") {
    p.then(() => { el.enableAudio.hidden = true; }).catch(() => { el.enableAudio.hidden = false; });
  }
}

async function keepScreenOn(on) {
  try {
    if (on && !state.wakeLock && navigator.wakeLock) {
      state.wakeLock = await navigator.wakeLock.request("screen");
    } else if (!on && state.wakeLock) {
      await state.wakeLock.release();
      state.wakeLock = null;
    }
  } catch {
    state.wakeLock = null;
  }
}

function stopEverything() {
  window.clearTimeout(state.reconnectTimer);
  if (state.session) state.session.close();
  state.session = null;
  camera.stop();
  el.preview.srcObject = null;
  el.liveBadge.hidden = true;
  keepScreenOn(false);
}

/** Final screens: the link is dead, in use elsewhere, or the call is over. */
function finalScreen(key) {
  state.over = true;
  stopEverything();
  showMessage(key, { body: key === "ended" && !state.recording ? "ended_norec" : key });
}

function apiFailure(err, retry) {
  if (err instanceof ApiError) {
    if (err.status === 404 || err.status === 410) return finalScreen("expired");
    if (err.status === 409 || err.status === 401 || err.status === 403) return finalScreen("in_use");
  }
  return showMessage("error", { actionKey: "message.retry", action: retry });
}

// ---- flow ------------------------------------------------------------------------------

async function boot() {
  i18n.apply();
  bindLangSwitch($("lang-switch"), i18n);
  i18n.onChange(renderDynamic);
  wireControls();
  if (!state.token) return finalScreen("expired");
  if (!mediaSupported()) return showMessage("unsupported");
  await openLink();
}

async function openLink() {
  setStatus("loading");
  let info;
  try {
    info = await citizenApi("open", state.token);
  } catch (err) {
    return apiFailure(err, openLink);
  }
  const minutes = Number(info.lifetime_minutes);
  if (minutes > 0) state.lifetime = Math.max(1, Math.round(minutes));
  state.recording = info.recording !== false;
  renderDynamic();
  if (["ended", "expired", "failed"].includes(info.state)) return finalScreen("expired");
  if (info.bound && ["consented", "live"].includes(info.state)) {
    state.resume = true;
    renderDynamic();
    return prepareCamera();
  }
  setStatus("consent");
  showScreen("consent");
}

async function onConsent() {
  unlockAudio();
  el.accept.disabled = true;
  try {
    const answer = await citizenApi("consent", state.token);
    state.signalling = answer.signalling_token || "";
    state.signallingAt = Date.now();
  } catch (err) {
    el.accept.disabled = false;
    return apiFailure(err, onConsent);
  }
  await prepareCamera();
}

async function prepareCamera() {
  setStatus("camera");
  try {
    await camera.open();
  } catch (err) {
    const kind = classifyMediaError(err);
    return showMessage(kind, { actionKey: "message.retry", action: prepareCamera });
  }
  el.preview.srcObject = camera.stream;
  el.preview.classList.toggle("mirrored", camera.facing === "user");
  camera.setMuted(state.muted);
  el.start.hidden = false;
  el.end.hidden = true;
  setStatus(state.resume ? "resume" : "preview");
  showScreen("call");
  el.switchCam.hidden = !(await camera.canSwitch());
}

async function onStart() {
  unlockAudio();
  el.start.hidden = true;
  el.end.hidden = false;
  keepScreenOn(true);
  await connect();
}

/** Gets a fresh signalling token when needed and starts one CallSession. */
async function connect() {
  if (state.over) return;
  setStatus(state.failedSessions > 0 ? "reconnecting" : "connecting");
  let token = state.signalling;
  if (!token || Date.now() - state.signallingAt > TOKEN_FRESH_MS) {
    try {
      token = (await citizenApi("reconnect", state.token)).signalling_token || "";
    } catch (err) {
      if (err instanceof ApiError && err.status !== 0 && err.status !== 429 && err.status < 500) {
        // Once a call has been live the link stays valid until the call ends.
        if (state.everLive && (err.status === 404 || err.status === 410)) return finalScreen("ended");
        return apiFailure(err, connect);
      }
      return scheduleReconnect();
    }
  }
  state.signalling = "";
  if (state.over) return;
  const session = new CallSession(token, camera.stream, remoteStream, {
    onReady: (recording) => { state.recording = recording; },
    onLive: () => {
      state.failedSessions = 0;
      state.backoff = 1000;
      state.everLive = true;
      el.liveBadge.hidden = false;
      setStatus("live");
      playStaffAudio();
    },
    onReconnecting: () => {
      if (state.session !== session) return;
      el.liveBadge.hidden = true;
      setStatus("reconnecting");
    },
    onMessage,
    onEnded: () => finalScreen("ended"),
    onLost: () => {
      if (state.session !== session) return;
      state.session = null;
      el.liveBadge.hidden = true;
      state.failedSessions += 1;
      scheduleReconnect();
    },
  });
  state.session = session;
  session.start();
}

function scheduleReconnect() {
  if (state.over) return;
  setStatus("reconnecting");
  if (state.failedSessions >= MAX_FAILED_SESSIONS) {
    state.failedSessions = 0;
    return showMessage("lost", {
      body: "reconnect_failed", actionKey: "message.retry",
      action: () => { showScreen("call"); connect(); },
    });
  }
  window.clearTimeout(state.reconnectTimer);
  state.reconnectTimer = window.setTimeout(connect, state.backoff);
  state.backoff = Math.min(state.backoff * 2, 10000);
}

function onEnd() {
  const session = state.session;
  if (session && session.end()) {
    setStatus("ending");
    // "ended" normally follows at once; do not leave the citizen waiting if it does not.
    window.setTimeout(() => { if (!state.over) finalScreen("ended"); }, 5000);
  } else {
    finalScreen("ended");
  }
}

async function onSwitchCamera() {
  el.switchCam.disabled = true;
  try {
    const track = await camera.switch();
    camera.setMuted(state.muted);
    el.preview.srcObject = camera.stream;
    el.preview.classList.toggle("mirrored", camera.facing === "user");
    if (state.session) await state.session.replaceVideoTrack(track);
  } catch (err) {
    if (classifyMediaError(err) === "denied") showMessage("denied", { actionKey: "message.retry", action: prepareCamera });
  } finally {
    el.switchCam.disabled = false;
  }
}

/** A staff message (envelope {type, id, ...}): each id is shown once. */
function onMessage(msg) {
  if (typeof msg.id === "string") {
    if (state.seen.has(msg.id)) return;
    state.seen.add(msg.id);
  }
  if (msg.type === "link") addLink(msg);
}

/** A link pushed by staff: https only, opened without referrer or opener. */
function addLink(msg) {
  let url;
  try {
    url = new URL(String(msg.url));
  } catch {
    return;
  }
  if (url.protocol !== "https:") return;
  for (const old of el.linkList.querySelectorAll(".link-card")) {
    old.classList.remove("fresh");
    if (old.href === url.href) old.closest("li").remove();
  }
  const a = document.createElement("a");
  a.className = "link-card fresh";
  a.dataset.testid = "link-card";
  a.href = url.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.referrerPolicy = "no-referrer";
  const text = document.createElement("span");
  const title = document.createElement("span");
  title.className = "link-title";
  title.textContent = (typeof msg.title === "string" && msg.title.trim()) || url.hostname;
  const host = document.createElement("span");
  host.className = "link-host";
  host.textContent = url.hostname;
  text.append(title, host);
  const open = document.createElement("span");
  open.className = "link-open";
  open.setAttribute("aria-hidden", "true");
  open.textContent = i18n.t("links.open");
  a.append(text, open);
  const li = document.createElement("li");
  li.append(a);
  el.linkList.prepend(li);
  el.links.hidden = false;
}

/** Back online or on another network: recover now instead of waiting for a timer. */
function onNetworkChange() {
  if (state.over) return;
  if (state.session) {
    state.session.networkChanged();
  } else if (state.reconnectTimer) {
    window.clearTimeout(state.reconnectTimer);
    connect();
  }
}

function wireControls() {
  el.accept.addEventListener("click", onConsent);
  el.start.addEventListener("click", onStart);
  el.enableAudio.addEventListener("click", () => { unlockAudio(); playStaffAudio(); });
  el.mute.addEventListener("click", () => {
    state.muted = !state.muted;
    camera.setMuted(state.muted);
    el.mute.setAttribute("aria-pressed", String(state.muted));
    renderDynamic();
  });
  el.switchCam.addEventListener("click", onSwitchCamera);
  // end-call ends at once, like the staff's: the contract every script relies on.
  el.end.addEventListener("click", onEnd);
  el.messageAction.addEventListener("click", () => { if (state.action) state.action(); });
  window.addEventListener("online", onNetworkChange);
  if (navigator.connection && navigator.connection.addEventListener) {
    navigator.connection.addEventListener("change", onNetworkChange);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.session) keepScreenOn(true);
  });
}

boot();
