// Calls to the citizen site's JSON API. The link token travels only in request bodies
// (never a query string) and is never logged or put into an error message.

export class ApiError extends Error {
  /** @param {number} status HTTP status (0: network failure) */
  constructor(status, code, message) {
    super(message || code);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** POST {"token"} to /api/citizen/<action>; resolves with the JSON body or throws ApiError. */
export async function citizenApi(action, token) {
  let res;
  try {
    res = await fetch(`/api/citizen/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    throw new ApiError(res.status, (body && body.error) || `http_${res.status}`,
      (body && body.message) || "");
  }
  return body || {};
}

/** The link token from /c/{token}, or "" when the path has none. */
export function tokenFromPath(pathname = location.pathname) {
  const match = /^\/c\/([A-Za-z0-9_-]{1,64})\/?$/.exec(pathname);
  return match ? match[1] : "";
}
