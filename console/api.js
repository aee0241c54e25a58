// The REST API, as the platform's frontend calls it: bearer token, JSON, ETag/If-Match.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(baseUrl, token) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.token = token;
  }

  get origin() {
    return new URL(this.baseUrl).origin;
  }

  async request(method, path, { body, ifMatch } = {}) {
    const headers = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (ifMatch) headers["If-Match"] = ifMatch;
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, "network_error", String(error));
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      // Our errors are {"error": {"code", "message"}}; the gateway's own are {"message"}.
      const code = data?.error?.code ?? (response.status === 403 ? "forbidden" : `http_${response.status}`);
      const message = data?.error?.message ?? data?.message ?? response.statusText;
      throw new ApiError(response.status, code, message);
    }
    return { data, etag: response.headers.get("ETag") };
  }

  listProviders() {
    return this.request("GET", "/providers");
  }
  listConnections() {
    return this.request("GET", "/connections?limit=100");
  }
  getConnection(id) {
    return this.request("GET", `/connections/${id}`);
  }
  createConnection(body) {
    return this.request("POST", "/connections", { body });
  }
  updateConnection(id, body, etag) {
    return this.request("PATCH", `/connections/${id}`, { body, ifMatch: etag });
  }
  deleteConnection(id) {
    return this.request("DELETE", `/connections/${id}`);
  }
  authorize(id, returnUrl, display) {
    return this.request("POST", `/connections/${id}/authorize`, { body: { return_url: returnUrl, display } });
  }
  refresh(id) {
    return this.request("POST", `/connections/${id}/refresh`);
  }
  testConnection(id) {
    return this.request("POST", `/connections/${id}/test`);
  }
  listConnectionActivity(id, cursor) {
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    return this.request("GET", `/connections/${id}/activity?limit=20${after}`);
  }
  listFeeds() {
    return this.request("GET", "/feeds?limit=100");
  }
  getFeed(id) {
    return this.request("GET", `/feeds/${id}`);
  }
  createFeed(body) {
    return this.request("POST", "/feeds", { body });
  }
  updateFeed(id, body, etag) {
    return this.request("PATCH", `/feeds/${id}`, { body, ifMatch: etag });
  }
  runFeed(id) {
    return this.request("POST", `/feeds/${id}/run`);
  }
  listRuns(id) {
    return this.request("GET", `/feeds/${id}/runs`);
  }
}
