// The staff console: login (and forced password change), the phone-number form, the live
// consultation list and the live viewer.

import { bindLangSwitch, createI18n } from "/common/i18n.js";
import { ApiError, StaffApi } from "/staff/api.js";
import { ConsultationList } from "/staff/list.js";
import { StaffSocket } from "/staff/socket.js";
import { STRINGS } from "/staff/strings.js";
import { Review } from "/staff/review.js";
import { Viewer } from "/staff/viewer.js";

const i18n = createI18n(STRINGS, "ja");
const $ = (id) => document.getElementById(id);
const api = new StaffApi();

const el = {
  login: $("screen-login"),
  password: $("screen-password"),
  console: $("screen-console"),
  who: $("who"),
  logout: $("logout"),
  globalError: $("global-error"),
  loginForm: $("login-form"),
  loginUser: $("login-username"),
  loginPass: $("login-password"),
  loginError: $("login-error"),
  passwordForm: $("password-form"),
  pwOld: $("password-old"),
  pwNew: $("password-new"),
  pwConfirm: $("password-confirm"),
  pwError: $("password-error"),
  createForm: $("create-form"),
  phone: $("phone-input"),
  create: $("create-consultation"),
  phoneError: $("phone-error"),
  phoneDone: $("phone-done"),
  wsStatus: $("ws-status"),
};

const socket = new StaffSocket(onSocketMessage, onSocketState);
const list = new ConsultationList($("rows"), $("list-empty"), i18n, onRowAction);
const viewer = new Viewer({
  panel: $("viewer"),
  phone: $("viewer-phone"),
  close: $("close-viewer"),
  recordingWarning: $("recording-warning"),
  video: $("live-video"),
  status: $("viewer-status"),
  micWarning: $("mic-warning"),
  mute: $("mute-mic"),
  playAudio: $("play-audio"),
  retry: $("viewer-retry"),
  end: $("end-call"),
  linkForm: $("link-form"),
  linkInput: $("send-link-input"),
  linkTitle: $("send-link-title"),
  sendLink: $("send-link"),
  linkError: $("send-link-error"),
  linkDone: $("send-link-done"),
  linkDelivered: $("send-link-delivered"),
}, socket, api, i18n, (id) => list.setViewing(id));

let me = null; // the logged-in account (the review watermark shows its name)
const review = new Review({
  panel: $("review"),
  phone: $("review-phone"),
  close: $("review-close"),
  box: $("review-box"),
  video: $("review-video"),
  watermark: $("review-watermark"),
  status: $("review-status"),
  seek: $("review-seek"),
  markers: $("review-markers"),
  play: $("review-play"),
  pause: $("review-pause"),
  position: $("review-position"),
  duration: $("review-duration"),
}, socket, i18n, () => (me ? me.username : ""), (id) => { if (id) viewer.close(); });

let wsState = "closed";
let doneMessage = null; // {key, vars} of the last "link sent" notice

function showScreen(name) {
  el.login.hidden = name !== "login";
  el.password.hidden = name !== "password";
  el.console.hidden = name !== "console";
  el.logout.hidden = name === "login";
  el.who.hidden = name === "login";
}

function showError(target, text) {
  target.textContent = text;
  target.hidden = !text;
}

function errorText(err) {
  if (err instanceof ApiError && err.status === 0) return i18n.t("network");
  return (err && err.message) || i18n.t("network");
}

// ---- session ---------------------------------------------------------------------------

function enter(account) {
  me = account;
  el.who.textContent = `${me.username}${me.ward ? ` / ${me.ward}` : ""}`;
  if (me.must_change_password) {
    showScreen("password");
    el.pwOld.focus();
    return;
  }
  showScreen("console");
  showError(el.globalError, "");
  if (socket.stopped) socket.start();
  api.list().then((data) => {
    if (Array.isArray(data.items) && wsState !== "open") list.setItems(data.items);
  }).catch(() => {});
  el.phone.focus();
}

function toLogin(message = "") {
  socket.stop();
  viewer.close();
  review.close();
  list.setItems([]);
  api.csrf = "";
  showScreen("login");
  showError(el.loginError, message);
  el.loginPass.value = "";
  el.loginUser.focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  showError(el.loginError, "");
  const username = el.loginUser.value.trim();
  const password = el.loginPass.value;
  if (!username || !password) {
    showError(el.loginError, i18n.t("login.failed"));
    return;
  }
  try {
    const me = await api.login(username, password);
    el.loginPass.value = "";
    enter(me);
  } catch (err) {
    showError(el.loginError, err.message && err.status ? err.message : i18n.t("login.failed"));
  }
}

async function onPassword(ev) {
  ev.preventDefault();
  showError(el.pwError, "");
  if (el.pwNew.value !== el.pwConfirm.value) {
    showError(el.pwError, i18n.t("password.mismatch"));
    return;
  }
  try {
    await api.changePassword(el.pwOld.value, el.pwNew.value);
    el.pwOld.value = el.pwNew.value = el.pwConfirm.value = "";
    enter(await api.me());
  } catch (err) {
    showError(el.pwError, errorText(err));
  }
}

async function onLogout() {
  try {
    await api.logout();
  } catch {
    /* the session is dropped locally anyway */
  }
  toLogin();
}

// ---- consultations ---------------------------------------------------------------------

async function onCreate(ev) {
  ev.preventDefault();
  showError(el.phoneError, "");
  el.phoneDone.hidden = true;
  const phone = el.phone.value.trim();
  if (!phone) {
    showError(el.phoneError, i18n.t("create.empty"));
    el.phone.focus();
    return;
  }
  el.create.disabled = true;
  try {
    const c = await api.create(phone);
    el.phone.value = "";
    list.upsert(c);
    doneMessage = { key: "create.done", vars: { phone: c.phone_masked || "" } };
    el.phoneDone.textContent = i18n.t(doneMessage.key, doneMessage.vars);
    el.phoneDone.hidden = false;
  } catch (err) {
    showError(el.phoneError, errorText(err));
    el.phone.focus();
  } finally {
    el.create.disabled = false;
  }
}

async function onRowAction(action, id) {
  showError(el.globalError, "");
  const c = list.get(id);
  try {
    if (action === "open-viewer" && c) {
      review.close();
      await viewer.open(c);
    } else if (action === "review" && c) await review.open(c);
    else if (action === "resend") list.upsert(await api.resend(id));
    else if (action === "revoke") list.upsert(await api.revoke(id));
  } catch (err) {
    showError(el.globalError, errorText(err));
  }
}

// ---- staff socket ----------------------------------------------------------------------

function onSocketMessage(msg) {
  switch (msg.type) {
    case "ready":
      viewer.setIceServers(msg.ice_servers);
      review.setIceServers(msg.ice_servers);
      break;
    case "consultations":
      if (Array.isArray(msg.items)) {
        list.setItems(msg.items);
        viewer.onList(list.items);
      }
      break;
    case "answer":
      viewer.onAnswer(msg);
      break;
    case "ended":
      viewer.onEnded(msg);
      break;
    case "recording":
      viewer.onRecording(msg);
      break;
    case "delivered":
      viewer.onDelivered(msg);
      break;
    case "review_answer":
      review.onAnswer(msg);
      break;
    case "review_state":
      review.onState(msg);
      break;
    case "review_error":
      review.onError(msg);
      break;
    case "error":
      if (msg.id) viewer.onError(msg);
      else showError(el.globalError, msg.message || msg.error || "");
      break;
    default:
      break;
  }
}

function onSocketState(state) {
  const was = wsState;
  wsState = state;
  el.wsStatus.dataset.state = state;
  el.wsStatus.textContent = i18n.t(state === "open" ? "list.live_updates" : "list.offline");
  if (state === "open" && was !== "open") viewer.onSocketOpen();
  if (state === "closed" && was === "open") {
    viewer.onSocketClosed();
    review.onSocketClosed();
    // A closed socket may mean the session ended: check, and go to login if so.
    api.me().catch((err) => {
      if (err instanceof ApiError && err.status === 401) toLogin();
    });
  }
}

// ---- boot ------------------------------------------------------------------------------

function rerender() {
  list.rerender();
  viewer.rerender();
  review.rerender();
  onSocketState(wsState);
  if (doneMessage && !el.phoneDone.hidden) el.phoneDone.textContent = i18n.t(doneMessage.key, doneMessage.vars);
}

async function boot() {
  i18n.apply();
  bindLangSwitch($("lang-switch"), i18n);
  i18n.onChange(rerender);
  api.onUnauthorized = () => toLogin();
  el.loginForm.addEventListener("submit", onLogin);
  el.passwordForm.addEventListener("submit", onPassword);
  el.createForm.addEventListener("submit", onCreate);
  el.logout.addEventListener("click", onLogout);
  try {
    enter(await api.me());
  } catch {
    toLogin();
  }
}

boot();
