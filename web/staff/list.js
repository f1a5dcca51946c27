// The consultation list: one row per consultation, re-rendered only when it changed, so
// a link that staff are reading out by phone keeps its selection across live updates.

const VIEWABLE = new Set(["opened", "consented", "live"]);
const RESENDABLE = new Set(["created", "sms_sent", "expired", "failed"]);
const REVOCABLE = new Set(["created", "sms_sent", "opened", "consented"]);
const FINISHED = new Set(["ended", "expired", "failed"]);
const REVIEW_RECORDING = new Set(["stopped", "failed", "recording"]);

/** A recording may exist (the server checks) and its deletion time has not come. */
function reviewable(c) {
  return c.state === "ended" && !!c.recording && REVIEW_RECORDING.has(c.recording_status)
    && Number(c.deadline || 0) * 1000 > Date.now();
}

function node(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function button(label, testid, action, id, extraClass = "") {
  const b = node("button", `btn btn-small ${extraClass}`.trim(), label);
  b.type = "button";
  b.dataset.testid = testid;
  b.dataset.action = action;
  b.dataset.id = id;
  return b;
}

export class ConsultationList {
  /**
   * @param {HTMLElement} listEl  <ul> for the rows
   * @param {HTMLElement} emptyEl "no consultations" text
   * @param {{t: Function, lang: Function}} i18n
   * @param {(action: string, id: string) => void} onAction open-viewer | review | resend | revoke
   */
  constructor(listEl, emptyEl, i18n, onAction) {
    this.listEl = listEl;
    this.emptyEl = emptyEl;
    this.i18n = i18n;
    this.items = new Map(); // id -> consultation
    this.rows = new Map(); // id -> {key, li}
    this.viewing = "";
    listEl.addEventListener("click", (ev) => {
      const target = ev.target instanceof Element ? ev.target.closest("button[data-action]") : null;
      if (target) onAction(target.dataset.action, target.dataset.id);
    });
  }

  get(id) {
    return this.items.get(id);
  }

  /** Replaces the whole list (the server sends all items on every change). */
  setItems(items) {
    this.items = new Map(items.map((c) => [c.id, c]));
    this.render(items);
  }

  /** One consultation changed (e.g. the answer to create) before the socket says so. */
  upsert(c) {
    const items = [...this.items.values()].filter((x) => x.id !== c.id);
    items.push(c);
    items.sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
    this.setItems(items);
  }

  setViewing(id) {
    this.viewing = id || "";
    this.render([...this.items.values()], true);
  }

  rerender() {
    this.render([...this.items.values()], true);
  }

  render(items, force = false) {
    const seen = new Set();
    let previous = null;
    for (const c of items) {
      seen.add(c.id);
      const key = JSON.stringify(c) + this.i18n.lang() + (this.viewing === c.id);
      let entry = this.rows.get(c.id);
      if (!entry || entry.key !== key || force) {
        const li = this.row(c);
        if (entry) entry.li.replaceWith(li);
        entry = { key, li };
        this.rows.set(c.id, entry);
      }
      // Keep DOM order equal to the server's order.
      const want = previous ? previous.nextSibling : this.listEl.firstChild;
      if (want !== entry.li) this.listEl.insertBefore(entry.li, want);
      previous = entry.li;
    }
    for (const [id, entry] of this.rows) {
      if (!seen.has(id)) {
        entry.li.remove();
        this.rows.delete(id);
      }
    }
    this.emptyEl.hidden = items.length > 0;
  }

  time(epoch) {
    if (!epoch) return "";
    const locale = this.i18n.lang() === "ja" ? "ja-JP" : "en-GB";
    return new Date(epoch * 1000).toLocaleString(locale, {
      month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit",
    });
  }

  row(c) {
    const t = this.i18n.t;
    const li = node("li", "row");
    li.dataset.testid = "consultation-row";
    li.dataset.consultationId = c.id;
    li.dataset.state = c.state;
    if (this.viewing === c.id) li.classList.add("viewing");

    const main = node("div", "row-main");
    const phone = node("span", "row-phone", c.phone_masked || "");
    phone.dataset.testid = "consultation-phone";
    const badge = node("span", "badge", t(`state.${c.state}`));
    badge.dataset.testid = "consultation-status";
    badge.dataset.state = c.state;
    main.append(phone, badge);

    const actions = node("div", "row-actions");
    if (VIEWABLE.has(c.state)) {
      actions.append(button(t("row.open_viewer"), "open-viewer", "open-viewer", c.id, "btn-primary"));
    }
    if (reviewable(c)) actions.append(button(t("row.review"), "review-open", "review", c.id));
    if (RESENDABLE.has(c.state)) actions.append(button(t("row.resend"), "resend-link", "resend", c.id));
    if (REVOCABLE.has(c.state)) actions.append(button(t("row.revoke"), "revoke-link", "revoke", c.id));
    li.append(main, actions);

    if (c.link) {
      const box = node("div", "row-link");
      box.append(node("span", "muted", t("row.link")));
      const code = node("code", "", c.link);
      code.dataset.testid = "consultation-link";
      box.append(code);
      li.append(box);
    }

    const meta = node("div", "row-meta");
    meta.append(node("span", "", `${t("row.created")} ${this.time(c.created_at)}`));
    if (c.sms_status) meta.append(node("span", "", `${t("row.sms")}: ${t(`sms.${c.sms_status}`)}`));
    if (c.recording_status) {
      const rec = node("span", "", `${t("row.recording")}: ${t(`rec.${c.recording_status}`)}`);
      rec.dataset.testid = "consultation-recording";
      meta.append(rec);
    }
    if (FINISHED.has(c.state) && c.end_reason) {
      meta.append(node("span", "", `${t("row.ended_reason")}: ${t(`reason.${c.end_reason}`)}`));
    }
    if (FINISHED.has(c.state) && c.deadline) {
      const deadline = node("span", "", `${t("row.deadline")} ${this.time(c.deadline)}`);
      deadline.dataset.testid = "consultation-deadline";
      deadline.dataset.deadline = String(c.deadline);
      meta.append(deadline);
    }
    li.append(meta);

    if (c.sms_error && (c.sms_status === "failed" || c.state === "failed")) {
      const err = node("p", "row-error", c.sms_error);
      err.dataset.testid = "consultation-error";
      li.append(err);
    }
    return li;
  }
}
