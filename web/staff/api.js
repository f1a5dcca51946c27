// The staff console's JSON API client: session cookie + X-CSRF-Token on state changes.

export class ApiError extends Error {
  /** @param {number} status HTTP status (0: network failure) */
  constructor(status, code, message) {
    super(message || code);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export class StaffApi {
  constructor() {
    this.csrf = "";
    /** Called on a 401 after login (session expired or revoked). */
    this.onUnauthorized = () => {};
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && this.csrf) headers["X-CSRF-Token"] = this.csrf;
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network", "");
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = new ApiError(res.status, (data && data.error) || `http_${res.status}`,
        (data && data.message) || "");
      if (res.status === 401 && path !== "/api/login" && path !== "/api/me") this.onUnauthorized(err);
      throw err;
    }
    return data || {};
  }

  async me() {
    const me = await this.request("GET", "/api/me");
    this.csrf = me.csrf_token || this.csrf;
    return me;
  }

  async login(username, password) {
    const me = await this.request("POST", "/api/login", { username, password });
    this.csrf = me.csrf_token || "";
    return me;
  }

  logout() { return this.request("POST", "/api/logout", {}); }
  changePassword(oldPassword, newPassword) {
    return this.request("POST", "/api/password", { old_password: oldPassword, new_password: newPassword });
  }
  list() { return this.request("GET", "/api/consultations"); }
  create(phone) { return this.request("POST", "/api/consultations", { phone }); }
  end(id) { return this.request("POST", `/api/consultations/${encodeURIComponent(id)}/end`, {}); }
  resend(id) { return this.request("POST", `/api/consultations/${encodeURIComponent(id)}/resend`, {}); }
  revoke(id) { return this.request("POST", `/api/consultations/${encodeURIComponent(id)}/revoke`, {}); }
  sendLink(id, url, title) {
    return this.request("POST", `/api/consultations/${encodeURIComponent(id)}/links`, { url, title });
  }
}
