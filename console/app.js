// The Connections console: plain ES modules, no build step, no outside resources.
import { Api, ApiError } from "./api.js";
import { LANGUAGE, t } from "./strings.js";

const TOKEN_KEY = "console.session";
const POPUP_FEATURES = "popup,width=560,height=720";
const GRANT_FIELDS = ["client_id", "issuer", "authorization_url", "token_url", "revocation_url", "token_auth_method", "grant_type"];
const STATUSES = ["pending", "connected", "reauthorization_required", "error"];

const state = { config: null, api: null, session: null, connections: [], feeds: [], providers: null, tab: "connections" };

// ------------------------------------------------------------------ DOM helpers

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// replaceChildren would show a null as the text "null".
const present = (...nodes) => nodes.filter((node) => node !== null && node !== undefined && node !== false);

const $ = (selector) => document.querySelector(selector);
let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

function formatTime(value) {
  return value ? new Date(value).toLocaleString(LANGUAGE) : t("none");
}

function notify(message, kind = "info") {
  const region = kind === "error" ? $("#alert") : $("#notice");
  const other = kind === "error" ? $("#notice") : $("#alert");
  other.textContent = "";
  region.textContent = message;
}

function describeError(error) {
  if (!(error instanceof ApiError)) return String(error);
  if (error.status === 0) return t("networkError");
  if (error.status === 401) return t("unauthorized");
  if (error.status === 403) return t("forbidden");
  if (error.status === 412) return t("conflict");
  const explained = t(`error_${error.code}`);
  const detail = `${t("errorPrefix")} ${error.status} ${error.code}: ${error.message}`;
  return explained === `error_${error.code}` ? detail : `${explained} (${detail})`;
}

// ------------------------------------------------------------------ session

function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

function canManage(session) {
  const claims = tokenClaims(session.token);
  const scopes = String(claims.scope ?? (Array.isArray(claims.scp) ? claims.scp.join(" ") : claims.scp ?? "")).split(" ");
  return scopes.includes(state.config.manage_scope ?? "connections:manage");
}

function saveSession(session) {
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(session));
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKEN_KEY) ?? "null");
  } catch {
    return null;
  }
}

function startSession(session) {
  state.session = { ...session, manage: canManage(session) };
  state.api = new Api(state.config.api_url, session.token);
  renderShell();
  loadAll();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.session = null;
  state.api = null;
  renderSignIn();
}

function renderSignIn() {
  const root = $("#app");
  root.replaceChildren();
  $("#account").replaceChildren();
  const tenantId = nextId("tenant");
  const userId = nextId("user");
  let form;
  if (state.config.local_sign_in) {
    form = h(
      "form",
      { class: "card", id: "sign-in", onsubmit: signInLocally },
      h("h2", {}, t("signInTitle")),
      h("p", {}, t("signInHelp")),
      h("label", { for: tenantId }, t("tenant")),
      h("input", { id: tenantId, name: "tenant", required: true, autocomplete: "organization", value: "acme" }),
      h("label", { for: userId }, t("user")),
      h("input", { id: userId, name: "user", required: true, autocomplete: "username" }),
      h(
        "fieldset",
        {},
        h("legend", {}, t("access")),
        h("label", { class: "inline" }, h("input", { type: "radio", name: "access", value: "manage", checked: true }), t("accessManage")),
        h("label", { class: "inline" }, h("input", { type: "radio", name: "access", value: "read" }), t("accessRead")),
      ),
      h("button", { type: "submit", class: "primary" }, t("signIn")),
    );
  } else {
    const tokenId = nextId("token");
    form = h(
      "form",
      { class: "card", id: "sign-in", onsubmit: signInWithToken },
      h("h2", {}, t("tokenSignInTitle")),
      h("label", { for: tokenId }, t("tokenLabel")),
      h("textarea", { id: tokenId, name: "token", required: true, rows: 4 }),
      h("button", { type: "submit", class: "primary" }, t("signIn")),
    );
  }
  root.append(form);
  form.querySelector("input, textarea").focus();
}

async function signInLocally(event) {
  event.preventDefault();
  const data = new FormData(event.target);
  const body = { tenant: String(data.get("tenant")).trim(), user: String(data.get("user")).trim(), read_only: data.get("access") === "read" };
  const response = await fetch("/dev-token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) {
    notify(answer.message, "error");
    return;
  }
  const session = { token: answer.token, tenant: body.tenant, user: body.user };
  saveSession(session);
  startSession(session);
}

function signInWithToken(event) {
  event.preventDefault();
  const token = String(new FormData(event.target).get("token")).trim();
  const claims = tokenClaims(token);
  const session = { token, tenant: claims[state.config.tenant_claim ?? "tenant_id"] ?? "", user: claims.sub ?? "" };
  saveSession(session);
  startSession(session);
}

// ------------------------------------------------------------------ shell and tabs

function renderShell() {
  const session = state.session;
  $("#account").replaceChildren(
    ...present(
      h("span", {}, t("signedInAs", { user: session.user, tenant: session.tenant })),
      session.manage ? null : h("span", { class: "badge read-only" }, t("readOnlyBadge")),
      h("button", { type: "button", onclick: signOut }, t("signOut")),
    ),
  );
  const tabs = h(
    "div",
    { role: "tablist", class: "tabs", "aria-label": t("appTitle") },
    ["connections", "feeds"].map((name) =>
      h(
        "button",
        {
          role: "tab",
          id: `tab-${name}`,
          type: "button",
          "aria-selected": String(state.tab === name),
          "aria-controls": `panel-${name}`,
          tabindex: state.tab === name ? "0" : "-1",
          onclick: () => selectTab(name),
          onkeydown: tabKeys,
        },
        t(name === "connections" ? "tabConnections" : "tabFeeds"),
      ),
    ),
  );
  $("#app").replaceChildren(
    ...present(session.manage ? null : h("p", { class: "hint", id: "read-only-notice" }, t("readOnlyNotice"))),
    tabs,
    h("section", { role: "tabpanel", id: "panel-connections", "aria-labelledby": "tab-connections", hidden: state.tab !== "connections" }),
    h("section", { role: "tabpanel", id: "panel-feeds", "aria-labelledby": "tab-feeds", hidden: state.tab !== "feeds" }),
  );
}

function tabKeys(event) {
  if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
  const next = state.tab === "connections" ? "feeds" : "connections";
  selectTab(next);
  $(`#tab-${next}`).focus();
}

function selectTab(name) {
  state.tab = name;
  for (const tab of ["connections", "feeds"]) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#tab-${tab}`).tabIndex = tab === name ? 0 : -1;
    $(`#panel-${tab}`).hidden = tab !== name;
  }
}

async function loadAll() {
  try {
    const [connections, feeds] = await Promise.all([state.api.listConnections(), state.api.listFeeds()]);
    state.connections = connections.data.items;
    state.feeds = feeds.data.items;
  } catch (error) {
    notify(describeError(error), "error");
  }
  renderConnections();
  renderFeeds();
  showReturnedOutcome();
}

// ------------------------------------------------------------------ connections

function statusBadge(status) {
  const known = STATUSES.includes(status) ? status : "error";
  return h("span", { class: `badge status-${known}`, "data-status": status }, t(`status_${known}`));
}

function renderConnections() {
  const panel = $("#panel-connections");
  const manage = state.session.manage;
  const rows = state.connections.map((connection) =>
    h(
      "tr",
      { "data-connection-id": connection.id },
      h("th", { scope: "row" }, connection.name, connection.description ? h("div", { class: "muted" }, connection.description) : null),
      h("td", { class: "status" }, statusBadge(connection.status)),
      h("td", { class: "reason" }, connection.status_reason ?? ""),
      h(
        "td",
        { class: "actions" },
        h("button", { type: "button", onclick: () => showDetails(connection.id), "aria-label": `${t("details")}: ${connection.name}` }, t("details")),
        manage && connection.grant_type === "authorization_code"
          ? h(
              "button",
              { type: "button", class: "primary", onclick: () => connect(connection.id), "aria-label": `${t("connect")}: ${connection.name}` },
              connection.status === "connected" ? t("reconnect") : t("connect"),
            )
          : null,
        manage && connection.grant_type === "client_credentials"
          ? h("button", { type: "button", class: "primary", onclick: () => connectDirectly(connection.id) }, t("connect"))
          : null,
        manage && connection.status !== "pending"
          ? h("button", { type: "button", onclick: () => refreshNow(connection.id), "aria-label": `${t("refreshNow")}: ${connection.name}` }, t("refreshNow"))
          : null,
        manage && connection.test_url && connection.status === "connected"
          ? h("button", { type: "button", onclick: () => testConnection(connection.id), "aria-label": `${t("test")}: ${connection.name}` }, t("test"))
          : null,
        manage ? h("button", { type: "button", onclick: () => editConnection(connection.id), "aria-label": `${t("edit")}: ${connection.name}` }, t("edit")) : null,
        manage ? h("button", { type: "button", class: "danger", onclick: () => confirmDelete(connection), "aria-label": `${t("delete")}: ${connection.name}` }, t("delete")) : null,
      ),
    ),
  );
  panel.replaceChildren(
    ...present(
    h("h2", {}, t("tabConnections")),
    manage ? h("button", { type: "button", class: "primary", id: "new-connection", onclick: () => connectionForm(null, null) }, t("newConnection")) : null,
    state.connections.length
      ? h(
          "table",
          { id: "connections" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("colName")), h("th", { scope: "col" }, t("colStatus")), h("th", { scope: "col" }, t("colReason")), h("th", { scope: "col" }, t("colActions")))),
          h("tbody", {}, rows),
        )
      : h("p", {}, t("noConnections")),
    ),
  );
}

function replaceConnection(view) {
  const index = state.connections.findIndex((item) => item.id === view.id);
  if (index >= 0) state.connections[index] = view;
  else state.connections.push(view);
  renderConnections();
  renderFeeds();
}

async function reloadConnection(id) {
  const { data } = await state.api.getConnection(id);
  replaceConnection(data);
  return data;
}

function connectionName(id) {
  return state.connections.find((item) => item.id === id)?.name ?? id;
}

// Messages from the sign-in popup: only from the API's origin, only our message type.
window.addEventListener("message", async (event) => {
  if (!state.api || event.origin !== state.api.origin) return;
  const message = event.data;
  if (!message || message.type !== "oauth_connection" || typeof message.connection_id !== "string") return;
  const name = connectionName(message.connection_id);
  if (message.status === "connected") notify(t("connected", { name }));
  else notify(t("connectFailed", { name, error: message.error_description || message.error }), "error");
  try {
    await reloadConnection(message.connection_id);
  } catch (error) {
    notify(describeError(error), "error");
  }
});

async function connect(id) {
  // Open the window in the click itself (browsers block popups opened later), then point it at the link.
  const popup = window.open("", `connect-${id}`, POPUP_FEATURES);
  const returnUrl = `${location.origin}${location.pathname}`;
  try {
    const { data } = await state.api.authorize(id, returnUrl, popup ? "popup" : "page");
    if (popup) popup.location.href = data.redirect_url;
    else {
      notify(t("popupBlocked"));
      location.assign(data.redirect_url);
    }
  } catch (error) {
    popup?.close();
    notify(describeError(error), "error");
  }
}

async function connectDirectly(id) {
  try {
    await state.api.authorize(id, undefined, undefined);
    const view = await reloadConnection(id);
    notify(t("connected", { name: view.name }));
  } catch (error) {
    notify(describeError(error), "error");
  }
}

async function refreshNow(id) {
  try {
    const { data } = await state.api.refresh(id);
    replaceConnection(data);
    notify(t("refreshed", { name: data.name }));
  } catch (error) {
    notify(describeError(error), "error");
  }
}

async function testConnection(id) {
  try {
    const { data } = await state.api.testConnection(id);
    await reloadConnection(id);
    const outcome = data.status === null ? data.error : String(data.status);
    notify(t(data.ok ? "testPassed" : "testFailed", { outcome }), data.ok ? "info" : "error");
  } catch (error) {
    notify(describeError(error), "error");
  }
}

// ------------------------------------------------------------------ dialogs

function openDialog(title, content, { onclose } = {}) {
  const titleId = nextId("dialog-title");
  const opener = document.activeElement;
  const dialog = h(
    "dialog",
    { "aria-labelledby": titleId },
    h("div", { class: "dialog-head" }, h("h2", { id: titleId }, title), h("button", { type: "button", class: "close", "aria-label": t("close"), onclick: () => dialog.close() }, "×")),
    content,
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    onclose?.();
    if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

function field(label, input, hint) {
  const id = input.id || (input.id = nextId("field"));
  const wrapper = h("div", { class: "field" });
  if (input.type === "checkbox") wrapper.append(h("label", { class: "inline", for: id }, input, label));
  else wrapper.append(h("label", { for: id }, label), input);
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute("aria-describedby", hintId);
    wrapper.append(h("p", { class: "hint", id: hintId }, hint));
  }
  return wrapper;
}

function copyBox(value) {
  const id = nextId("redirect-uri");
  const input = h("input", { id, readonly: true, value, class: "redirect-uri" });
  return h(
    "div",
    { class: "field copy" },
    h("label", { for: id }, t("redirectUriLabel")),
    h(
      "div",
      { class: "row" },
      input,
      h(
        "button",
        {
          type: "button",
          class: "copy-button",
          onclick: async () => {
            try {
              await navigator.clipboard.writeText(value);
              notify(t("copied"));
            } catch {
              input.select();
              notify(t("copyFailed"));
            }
          },
        },
        t("copy"),
      ),
    ),
  );
}

function lines(value) {
  return value.split("\n").map((item) => item.trim()).filter(Boolean);
}

function parseParams(value) {
  return Object.fromEntries(lines(value).map((line) => {
    const at = line.indexOf("=");
    return at < 0 ? [line, ""] : [line.slice(0, at).trim(), line.slice(at + 1).trim()];
  }));
}

function redirectUri(connection) {
  return connection?.redirect_uri ?? state.config.redirect_uri ?? `${state.config.api_url.replace(/\/$/, "")}/oauth2/callback`;
}

function connectionForm(connection, etag) {
  const editing = connection !== null;
  const value = (name, fallback = "") => (editing ? connection[name] ?? fallback : fallback);
  const input = (name, attributes = {}) => h("input", { name, value: value(name), ...attributes });
  const select = (name, options, current) =>
    h("select", { name }, options.map((option) => h("option", { value: option, selected: option === current }, option)));
  const error = h("div", { class: "form-error", role: "alert" });
  const providerConfig = h("div", { class: "provider-config" });
  const providerSelect = editing ? null : h("select", { name: "provider" }, h("option", { value: "" }, t("providerGeneric")));
  const form = h(
    "form",
    { class: "connection-form", novalidate: false },
    editing && connection.status !== "pending" ? h("p", { class: "warning" }, t("grantWarning")) : null,
    copyBox(redirectUri(connection)),
    providerSelect ? field(t("fieldProvider"), providerSelect) : null,
    providerConfig,
    field(t("fieldName"), input("name", { required: true, maxlength: 100 })),
    field(t("fieldDescription"), input("description", { maxlength: 500 })),
    field(t("fieldClientId"), input("client_id", { required: true, autocomplete: "off" })),
    field(editing ? t("fieldClientSecretEdit") : t("fieldClientSecret"), h("input", { name: "client_secret", type: "password", autocomplete: "new-password" })),
    field(t("fieldAuthorizationUrl"), input("authorization_url", { type: "url" })),
    field(t("fieldTokenUrl"), input("token_url", { type: "url" })),
    field(t("fieldScopes"), h("input", { name: "scopes", value: (value("scopes", []) || []).join(" ") })),
    h(
      "details",
      {},
      h("summary", {}, t("advanced")),
      field(t("fieldIssuer"), input("issuer", { type: "url" })),
      field(t("fieldAuthMethod"), select("token_auth_method", ["client_secret_basic", "client_secret_post", "none"], value("token_auth_method", "client_secret_basic"))),
      field(t("fieldUsePkce"), h("input", { name: "use_pkce", type: "checkbox", checked: value("use_pkce", true) !== false })),
      field(t("fieldGrantType"), select("grant_type", ["authorization_code", "client_credentials"], value("grant_type", "authorization_code"))),
      field(t("fieldExtraParams"), h("textarea", { name: "extra_authorize_params", rows: 2 }, Object.entries(value("extra_authorize_params", {}) || {}).map(([k, v]) => `${k}=${v}`).join("\n"))),
      field(t("fieldAllowedUrls"), h("textarea", { name: "allowed_urls", rows: 2 }, (value("allowed_urls", []) || []).join("\n"))),
      field(t("fieldRevocationUrl"), input("revocation_url", { type: "url" })),
    ),
    error,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, editing ? t("save") : t("create")), h("button", { type: "button", onclick: () => dialog.close() }, t("cancel"))),
  );
  const dialog = openDialog(editing ? t("editTitle", { name: connection.name }) : t("createTitle"), form);
  if (providerSelect) offerProviders(form, providerSelect, providerConfig);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = readConnectionForm(form, connection);
    error.replaceChildren();
    try {
      const { data } = editing ? await state.api.updateConnection(connection.id, body, etag) : await state.api.createConnection(body);
      replaceConnection(data);
      dialog.close();
      notify(editing ? t("saved") : t("created", { name: data.name }));
    } catch (failure) {
      error.replaceChildren(h("p", {}, describeError(failure)));
      if (failure instanceof ApiError && failure.status === 412) {
        error.append(
          h("button", { type: "button", onclick: async () => {
            dialog.close();
            await editConnection(connection.id);
          } }, t("reload")),
        );
      }
      error.querySelector("button, p").focus?.();
    }
  });
  form.querySelector("input[name=name]").focus();
}

// The catalog's providers: picking one asks only for its config fields; the service fills in the rest.
async function offerProviders(form, select, container) {
  try {
    state.providers ??= (await state.api.listProviders()).data.items;
  } catch {
    return; // the generic form still works
  }
  for (const provider of state.providers) select.append(h("option", { value: provider.id }, provider.name));
  const endpoints = form.querySelectorAll("input[name=authorization_url], input[name=token_url]");
  select.addEventListener("change", () => {
    const provider = state.providers.find((item) => item.id === select.value);
    container.replaceChildren();
    endpoints.forEach((element) => element.closest(".field").toggleAttribute("hidden", Boolean(provider)));
    if (!provider) return;
    for (const item of provider.config) {
      const element = h("input", { name: `config.${item.name}`, required: true, placeholder: item.example, autocomplete: "off" });
      container.append(field(item.label, element, item.description));
    }
    container.append(h("p", { class: "hint" }, h("a", { href: provider.docs_url, target: "_blank", rel: "noopener noreferrer" }, t("providerDocs", { name: provider.name }))));
    form.querySelector("input[name=scopes]").value = provider.default_scopes.join(" ");
  });
}

function readConnectionForm(form, connection) {
  const data = new FormData(form);
  const text = (name) => String(data.get(name) ?? "").trim();
  if (!connection && text("provider")) {
    // Only what the tenant entered: the provider's profile supplies endpoints, method, PKCE and parameters.
    const config = Object.fromEntries([...data.keys()].filter((name) => name.startsWith("config.")).map((name) => [name.slice(7), text(name)]));
    const body = { provider: text("provider"), config, name: text("name"), description: text("description"), client_id: text("client_id"), scopes: text("scopes").split(/\s+/).filter(Boolean) };
    if (text("client_secret")) body.client_secret = text("client_secret");
    return body;
  }
  const all = {
    name: text("name"),
    description: text("description"),
    client_id: text("client_id"),
    authorization_url: text("authorization_url") || null,
    token_url: text("token_url") || null,
    scopes: text("scopes").split(/\s+/).filter(Boolean),
    issuer: text("issuer") || null,
    token_auth_method: text("token_auth_method"),
    use_pkce: data.get("use_pkce") !== null,
    grant_type: text("grant_type"),
    extra_authorize_params: parseParams(String(data.get("extra_authorize_params") ?? "")),
    allowed_urls: lines(String(data.get("allowed_urls") ?? "")),
    revocation_url: text("revocation_url") || null,
  };
  const secret = text("client_secret");
  if (!connection) {
    const body = Object.fromEntries(Object.entries(all).filter(([, value]) => value !== null));
    if (secret) body.client_secret = secret;
    return body;
  }
  // An edit sends only what changed, so that it ends the grant only when a grant setting changed.
  const body = {};
  for (const [name, value] of Object.entries(all)) {
    const before = connection[name] ?? null;
    if (JSON.stringify(value) !== JSON.stringify(before) && !(value === null && before === null)) {
      if (value === null && (name === "token_url")) continue;
      body[name] = value;
    }
  }
  if (secret) body.client_secret = secret;
  return body;
}

async function editConnection(id) {
  try {
    const { data, etag } = await state.api.getConnection(id);
    replaceConnection(data);
    connectionForm(data, etag);
  } catch (error) {
    notify(describeError(error), "error");
  }
}

function confirmDelete(connection) {
  const content = h(
    "div",
    {},
    h("p", {}, t("confirmDelete")),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", class: "danger", id: "confirm-delete", onclick: async () => {
        dialog.close();
        try {
          await state.api.deleteConnection(connection.id);
          state.connections = state.connections.filter((item) => item.id !== connection.id);
          renderConnections();
          notify(t("deleted", { name: connection.name }));
        } catch (error) {
          notify(describeError(error), "error");
        }
      } }, t("delete")),
      h("button", { type: "button", onclick: () => dialog.close() }, t("cancel")),
    ),
  );
  const dialog = openDialog(t("confirmDeleteTitle", { name: connection.name }), content);
  dialog.querySelector("#confirm-delete").focus();
}

async function showDetails(id) {
  let connection;
  try {
    connection = await reloadConnection(id);
  } catch (error) {
    notify(describeError(error), "error");
    return;
  }
  const feeds = state.feeds.filter((feed) => feed.connection_id === id);
  const timeline = await activityTimeline(id);
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  const content = h(
    "div",
    { class: "details" },
    h(
      "dl",
      {},
      row(t("colStatus"), statusBadge(connection.status)),
      connection.status_reason ? row(t("colReason"), connection.status_reason) : null,
      row(t("grantedScopes"), (connection.granted_scopes ?? []).join(" ") || t("none")),
      row(t("expiresAt"), formatTime(connection.expires_at)),
      row(t("refreshedAt"), formatTime(connection.refreshed_at)),
      row(t("connectedAt"), formatTime(connection.connected_at)),
      row(t("lastUsedAt"), formatTime(connection.last_used_at)),
      connection.last_test
        ? row(
            t("lastTest"),
            `${connection.last_test.ok ? t("testOk") : t("testNotOk")} (${connection.last_test.status ?? connection.last_test.error}, ${formatTime(connection.last_test.checked_at)})`,
          )
        : null,
      row(t("fieldClientId"), connection.client_id),
      row(t("fieldTokenUrl"), connection.token_url),
      row(t("feedsUsing"), feeds.length ? h("ul", {}, feeds.map((feed) => h("li", {}, feed.name))) : t("none")),
    ),
    copyBox(connection.redirect_uri),
    h("h3", {}, t("activity")),
    timeline,
  );
  openDialog(t("detailsTitle", { name: connection.name }), content);
}

// The connection's activity log, newest first: when, what, by whom (or by which trigger), and the names
// of the fields an edit changed or the reason of a failure. "Show older" follows the log's cursor a page
// at a time and moves the focus to the first entry it added.
async function activityTimeline(id) {
  let page;
  try {
    page = (await state.api.listConnectionActivity(id)).data;
  } catch {
    return h("p", { class: "activity-empty" }, t("activityUnavailable"));
  }
  if (!page.items.length) return h("p", { class: "activity-empty" }, t("noActivity"));
  const list = h("ol", { class: "activity", "aria-label": t("activity") }, page.items.map(activityEntry));
  let cursor = page.next_cursor;
  const older = h("button", { type: "button", class: "activity-older", onclick: async () => {
    older.disabled = true;
    try {
      const next = (await state.api.listConnectionActivity(id, cursor)).data;
      const added = next.items.map(activityEntry);
      list.append(...added);
      cursor = next.next_cursor;
      if (!cursor) older.remove();
      added[0]?.focus();
    } catch (error) {
      notify(describeError(error), "error");
    } finally {
      older.disabled = false;
    }
  } }, t("showOlder"));
  return h("div", { class: "activity-log" }, list, cursor ? older : null);
}

function activityEntry(entry) {
  const label = t(`activity.${entry.type}`);
  const who = entry.actor ? t("activityBy", { actor: entry.actor }) : t("activityTrigger", { trigger: entry.trigger });
  const fields = entry.details.changes ? Object.keys(entry.details.changes) : entry.details.changed_fields;
  let note = "";
  if (fields?.length) note = t("activityFields", { fields: fields.join(", ") });
  else if (entry.details.reason) note = t("activityReason", { reason: entry.details.reason });
  else if (entry.type === "connection.tested") note = entry.details.ok ? t("testOk") : t("testNotOk");
  return h(
    "li",
    { tabindex: "-1" },
    h("time", { datetime: entry.occurred_at }, formatTime(entry.occurred_at)),
    " ",
    h("strong", {}, label === `activity.${entry.type}` ? entry.type : label),
    ` ${who}${note ? ` — ${note}` : ""}`,
  );
}

// ------------------------------------------------------------------ feeds

function renderFeeds() {
  const panel = $("#panel-feeds");
  if (!panel) return;
  const manage = state.session.manage;
  const rows = state.feeds.map((feed) =>
    h(
      "tr",
      { "data-feed-id": feed.id },
      h("th", { scope: "row" }, feed.name),
      h("td", {}, feed.url),
      h("td", {}, feed.connection_id ? connectionName(feed.connection_id) : t("none")),
      h("td", {}, feed.last_status ? `${feed.last_status} (${formatTime(feed.last_run_at)})` : t("none")),
      h(
        "td",
        { class: "actions" },
        h("button", { type: "button", onclick: () => showRuns(feed), "aria-label": `${t("runs")}: ${feed.name}` }, t("runs")),
        manage ? h("button", { type: "button", onclick: () => runFeed(feed), "aria-label": `${t("runNow")}: ${feed.name}` }, t("runNow")) : null,
        manage ? h("button", { type: "button", onclick: () => editFeed(feed.id), "aria-label": `${t("edit")}: ${feed.name}` }, t("edit")) : null,
      ),
    ),
  );
  panel.replaceChildren(
    ...present(
    h("h2", {}, t("tabFeeds")),
    manage ? h("button", { type: "button", class: "primary", onclick: () => feedForm(null, null) }, t("newFeed")) : null,
    state.feeds.length
      ? h(
          "table",
          { id: "feeds" },
          h("thead", {}, h("tr", {}, [t("colName"), t("colUrl"), t("fieldConnection"), t("colLastRun"), t("colActions")].map((label) => h("th", { scope: "col" }, label)))),
          h("tbody", {}, rows),
        )
      : h("p", {}, t("noFeeds")),
    ),
  );
}

function feedForm(feed, etag) {
  const editing = feed !== null;
  const error = h("div", { class: "form-error", role: "alert" });
  const connectionSelect = h(
    "select",
    { name: "connection_id" },
    h("option", { value: "" }, t("noConnection")),
    state.connections.map((connection) => h("option", { value: connection.id, selected: feed?.connection_id === connection.id }, connection.name)),
  );
  const form = h(
    "form",
    {},
    field(t("fieldName"), h("input", { name: "name", required: true, value: feed?.name ?? "" })),
    field(t("fieldUrl"), h("input", { name: "url", type: "url", required: true, value: feed?.url ?? "" })),
    field(t("fieldConnection"), connectionSelect),
    field(t("fieldSchedule"), h("input", { name: "schedule", type: "number", min: 5, value: typeof feed?.schedule === "number" ? feed.schedule : 60 })),
    field(t("fieldFormat"), h("select", { name: "format" }, ["yml", "xml", "csv", "json"].map((format) => h("option", { value: format, selected: (feed?.format ?? "yml") === format }, format)))),
    field(t("fieldEnabled"), h("input", { name: "enabled", type: "checkbox", checked: feed?.enabled ?? true })),
    error,
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, editing ? t("save") : t("create")), h("button", { type: "button", onclick: () => dialog.close() }, t("cancel"))),
  );
  const dialog = openDialog(editing ? t("feedEditTitle", { name: feed.name }) : t("feedCreateTitle"), form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name")).trim(),
      url: String(data.get("url")).trim(),
      connection_id: String(data.get("connection_id")) || null,
      schedule: Number(data.get("schedule")),
      format: String(data.get("format")),
      enabled: data.get("enabled") !== null,
    };
    try {
      const { data: saved } = editing ? await state.api.updateFeed(feed.id, body, etag) : await state.api.createFeed(body);
      const index = state.feeds.findIndex((item) => item.id === saved.id);
      if (index >= 0) state.feeds[index] = saved;
      else state.feeds.push(saved);
      renderFeeds();
      dialog.close();
      notify(t("saved"));
    } catch (failure) {
      error.replaceChildren(h("p", {}, describeError(failure)));
    }
  });
  form.querySelector("input[name=name]").focus();
}

async function editFeed(id) {
  try {
    const { data, etag } = await state.api.getFeed(id);
    feedForm(data, etag);
  } catch (error) {
    notify(describeError(error), "error");
  }
}

async function runFeed(feed) {
  try {
    await state.api.runFeed(feed.id);
    notify(t("runQueued", { name: feed.name }));
  } catch (error) {
    notify(describeError(error), "error");
  }
}

async function showRuns(feed) {
  let runs = [];
  try {
    const [answer, current] = await Promise.all([state.api.listRuns(feed.id), state.api.getFeed(feed.id)]);
    runs = answer.data.items;
    state.feeds = state.feeds.map((item) => (item.id === feed.id ? current.data : item));
    renderFeeds();
  } catch (error) {
    notify(describeError(error), "error");
    return;
  }
  const content = runs.length
    ? h(
        "table",
        { class: "runs" },
        h("thead", {}, h("tr", {}, [t("colStarted"), t("colOutcome"), t("colItems"), t("colError")].map((label) => h("th", { scope: "col" }, label)))),
        h("tbody", {}, runs.map((run) => h("tr", {}, h("td", {}, formatTime(run.started_at)), h("td", {}, run.status), h("td", {}, run.items ?? ""), h("td", {}, run.error_code ? `${run.error_code}: ${run.error_message ?? ""}` : "")))),
      )
    : h("p", {}, t("noRuns"));
  openDialog(`${t("runs")}: ${feed.name}`, content);
}

// ------------------------------------------------------------------ start

function showReturnedOutcome() {
  // A full-page Connect (popup blocked) comes back here with the outcome in the query.
  const query = new URLSearchParams(location.search);
  if (!query.has("status")) return;
  const name = connectionName(query.get("connection_id") ?? "");
  if (query.get("status") === "connected") notify(t("connected", { name }));
  else notify(t("connectFailed", { name, error: query.get("error_description") ?? query.get("error") }), "error");
  history.replaceState(null, "", location.pathname);
}

async function main() {
  document.documentElement.lang = LANGUAGE;
  document.title = t("appTitle");
  $("#title").textContent = t("appTitle");
  try {
    const response = await fetch("config.json");
    state.config = await response.json();
  } catch {
    state.config = { api_url: location.origin, local_sign_in: false };
  }
  const session = loadSession();
  if (session?.token) startSession(session);
  else renderSignIn();
}

main();
