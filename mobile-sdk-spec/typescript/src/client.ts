import createClient from "openapi-fetch";

import type { paths } from "./generated/openapi.js";
import { type CryptoProvider, webCryptoProvider } from "./crypto.js";
import { base64url, formEncode, hex, parseQuery, splitURL, utf8 } from "./encoding.js";
import {
  AuthorizationFailed,
  ConnectionRevoked,
  NotFound,
  RateLimited,
  ReauthRequired,
  SessionEnded,
  StateMismatch,
  TokenwarmError,
  Unavailable,
  UnexpectedResponse,
  retryAfterSeconds,
} from "./errors.js";
import type { StoredSession, TokenStore } from "./store.js";

type DeviceTokenAnswer = paths["/v1/device/token"]["post"]["responses"][200]["content"]["application/json"];
type AccessTokenAnswer = paths["/v1/connections/{id}/access-token"]["get"]["responses"][200]["content"]["application/json"];
/** A connection as the server describes it. */
export type Connection = paths["/v1/connections"]["get"]["responses"][200]["content"]["application/json"]["connections"][number];

export interface TokenwarmOptions {
  /** tokenwarm's public URL (its RFC 8414 issuer), e.g. https://tokenwarm.example.com. */
  baseUrl: string;
  /** The app's redirect URI, registered with the operator (exact match; loopback IPs on any port). */
  redirectUri: string;
  /** The app's client_id in TOKENWARM_APP_CLIENTS. */
  clientId?: string;
  /** The secure store of the device session. */
  store: TokenStore;
  /** fetch to use (default globalThis.fetch). */
  fetch?: (input: Request) => Promise<Response>;
  /** Randomness and SHA-256 (default Web Crypto, globalThis.crypto). */
  crypto?: CryptoProvider;
  /** The clock, in milliseconds since the epoch (default Date.now). */
  now?: () => number;
  /** A name for this device in the user's session list, e.g. "Ana's iPhone". */
  deviceLabel?: string;
  /**
   * Abort a request to tokenwarm after this long (default 10 s). A lost
   * device refresh is retried at once, so the retry arrives well inside the
   * server's reuse interval (30 s by default).
   */
  requestTimeoutMs?: number;
  /**
   * Exchange the code with grant_type=handoff_code and add app_redirect_uri
   * to the authorize URL: for servers older than the standard OAuth leg
   * (SPEC-11 sections 2-3). Default false: grant_type=authorization_code.
   */
  legacyOAuth?: boolean;
}

/** An authorization in progress: keep it until the redirect comes back (persist it if the app may be killed meanwhile). */
export interface AuthorizationRequest {
  /** Open this in the system browser (ASWebAuthenticationSession, Custom Tabs), never a WebView. */
  url: string;
  state: string;
  codeVerifier: string;
  redirectUri: string;
}

export interface AuthorizeOptions {
  /** production, sandbox or https://<domain>.my.salesforce.com. */
  loginHost?: string;
  loginHint?: string;
  /** ReauthRequired.reauthUrl: re-authorize that connection (its ID stays). */
  reauthUrl?: string;
}

/** A device session as the app may see it (no token). */
export interface DeviceSessionInfo {
  sessionId: string;
  connectionIds: string[];
}

/** A Salesforce access token, to send to instanceUrl as Authorization: Bearer. Keep it in memory only. */
export interface SalesforceToken {
  connectionId: string;
  accessToken: string;
  instanceUrl: string;
  issuedAt: string;
  expiresAt: string;
}

export interface PullOptions {
  /** Seconds the token must stay valid for the work ahead (default 300, at most 7200). */
  minValidity?: number;
}

interface CachedToken {
  token: SalesforceToken;
  expiresAtMs: number;
}

/** A fetch that threw: the request may or may not have reached the server. */
class NetworkFailure extends Error {
  override name = "NetworkFailure";
}

const defaultMinValidity = 300;
/** The device JWT is refreshed this long before it expires. */
const jwtMargin = 30_000;

/**
 * The tokenwarm client: connect (PKCE), the device session (single-flight
 * refresh), Salesforce access tokens (cached in memory), typed errors.
 */
export class TokenwarmClient {
  private readonly opts: TokenwarmOptions;
  private readonly http: ReturnType<typeof createClient<paths>>;
  private readonly crypto: CryptoProvider;
  private readonly now: () => number;
  private readonly issuer: string;

  private jwt: { token: string; expiresAtMs: number } | null = null;
  private refreshing: Promise<string> | null = null;
  private readonly cache = new Map<string, CachedToken>();
  private readonly pulls = new Map<string, { minValidity: number; promise: Promise<SalesforceToken> }>();
  private readonly rejections = new Map<string, Promise<SalesforceToken>>();

  constructor(opts: TokenwarmOptions) {
    this.opts = opts;
    this.issuer = opts.baseUrl.replace(/\/+$/, "");
    this.crypto = opts.crypto ?? webCryptoProvider();
    this.now = opts.now ?? (() => Date.now());
    const f = opts.fetch ?? ((input: Request) => globalThis.fetch(input));
    this.http = createClient<paths>({ baseUrl: this.issuer, fetch: f });
  }

  // ---------------------------------------------------------------- connect

  /** Builds the authorize URL with a fresh PKCE pair (S256) and state. */
  async authorize(o: AuthorizeOptions = {}): Promise<AuthorizationRequest> {
    const codeVerifier = base64url(this.crypto.getRandomValues(new Uint8Array(32)));
    const challenge = base64url(await this.crypto.sha256(utf8(codeVerifier)));
    const state = base64url(this.crypto.getRandomValues(new Uint8Array(16)));
    const params: Record<string, string | undefined> = {
      response_type: "code",
      client_id: this.opts.clientId,
      redirect_uri: this.opts.redirectUri,
      scope: "connections",
      state,
      code_challenge: challenge,
      code_challenge_method: "S256",
      login_host: o.loginHost,
      login_hint: o.loginHint,
    };
    if (this.opts.legacyOAuth) params["app_redirect_uri"] = this.opts.redirectUri;
    const base = o.reauthUrl ?? this.issuer + "/v1/oauth/authorize";
    const url = base + (base.includes("?") ? "&" : "?") + formEncode(params);
    return { url, state, codeVerifier, redirectUri: this.opts.redirectUri };
  }

  /**
   * Finishes a connect (or re-authorization) from the URL the app was
   * called back at: checks state (and iss when given), then exchanges the
   * code. A failure leaves any stored session as it was.
   */
  async completeAuthorization(redirectUrl: string, req: AuthorizationRequest): Promise<DeviceSessionInfo> {
    const p = parseQuery(splitURL(redirectUrl).query);
    if (p["state"] !== req.state) {
      throw new StateMismatch("the redirect's state is not this authorization's: ignored");
    }
    if (p["iss"] !== undefined && p["iss"].replace(/\/+$/, "") !== this.issuer) {
      throw new AuthorizationFailed("the redirect comes from another issuer (RFC 9207): ignored");
    }
    if (p["error"] !== undefined) {
      throw new AuthorizationFailed(p["error_description"] || p["error"], undefined, p["error"]);
    }
    const code = p["code"];
    if (!code) throw new AuthorizationFailed("the redirect carries neither a code nor an error");
    let answer: DeviceTokenAnswer;
    try {
      answer = await this.tokenRequest({
        grant_type: this.opts.legacyOAuth ? "handoff_code" : "authorization_code",
        code,
        code_verifier: req.codeVerifier,
        redirect_uri: req.redirectUri,
        client_id: this.opts.clientId,
        device_label: this.opts.deviceLabel,
      });
    } catch (e) {
      if (e instanceof NetworkFailure) throw new Unavailable("tokenwarm could not be reached", 1);
      if (e instanceof GrantRefused) throw new AuthorizationFailed(e.message, e.status, e.code);
      throw e;
    }
    return this.keep(answer);
  }

  /** The stored session's IDs, or null when the app is not connected. */
  async session(): Promise<DeviceSessionInfo | null> {
    const s = await this.opts.store.load();
    return s ? { sessionId: s.sessionId, connectionIds: [...s.connectionIds] } : null;
  }

  /** Revokes this device's session at tokenwarm and forgets it locally (the Salesforce connection stays). */
  async signOut(): Promise<void> {
    const s = await this.opts.store.load();
    try {
      if (s) {
        await this.call(() =>
          this.http.POST("/v1/device/revoke", {
            body: { token: s.refreshToken },
            bodySerializer: (b) => formEncode(b),
            headers: { "Content-Type": "application/x-www-form-urlencoded" },
            signal: this.signal(),
          }),
        );
      }
    } catch {
      // Signing out locally must not depend on the network.
    } finally {
      await this.forget();
    }
  }

  // --------------------------------------------------------- device session

  /** A valid device access JWT, refreshed (single-flight) when needed. */
  async deviceAccessToken(): Promise<string> {
    if (this.jwt && this.jwt.expiresAtMs - this.now() > jwtMargin) return this.jwt.token;
    return this.refreshDevice(this.jwt?.token);
  }

  /**
   * Refreshes the device session once for every caller that asks while it
   * runs. stale, when given, is the JWT the caller saw rejected: when the
   * session was refreshed since, the newer JWT is returned without a call.
   */
  private refreshDevice(stale?: string): Promise<string> {
    if (this.refreshing) return this.refreshing;
    if (stale !== undefined && this.jwt && this.jwt.token !== stale && this.jwt.expiresAtMs - this.now() > jwtMargin) {
      return Promise.resolve(this.jwt.token);
    }
    const p = this.doRefresh().finally(() => {
      if (this.refreshing === p) this.refreshing = null;
    });
    this.refreshing = p;
    return p;
  }

  private async doRefresh(): Promise<string> {
    const s = await this.opts.store.load();
    if (!s) throw new SessionEnded("no device session: connect first");
    const form = { grant_type: "refresh_token", refresh_token: s.refreshToken, client_id: this.opts.clientId };
    let answer: DeviceTokenAnswer;
    try {
      try {
        answer = await this.tokenRequest(form);
      } catch (e) {
        if (!(e instanceof NetworkFailure)) throw e;
        // The answer may be lost after the server rotated the token: the
        // same token presented again inside the server's reuse interval
        // gets the same successor (SPEC-11 section 3). Once only.
        answer = await this.tokenRequest(form);
      }
    } catch (e) {
      if (e instanceof NetworkFailure) throw new Unavailable("tokenwarm could not be reached; the session is kept", 1);
      if (e instanceof GrantRefused && e.code === "invalid_grant") {
        await this.forget();
        throw new SessionEnded("the device session ended (" + e.message + "); connect again, app data is kept", e.status, e.code);
      }
      if (e instanceof GrantRefused) throw new UnexpectedResponse(e.message, e.status, e.code);
      throw e;
    }
    await this.keep(answer);
    return answer.access_token;
  }

  /** Stores a new device session (before its JWT is used). */
  private async keep(a: DeviceTokenAnswer): Promise<DeviceSessionInfo> {
    const s: StoredSession = { refreshToken: a.refresh_token, sessionId: a.session_id, connectionIds: [...a.connection_ids] };
    await this.opts.store.save(s);
    this.jwt = { token: a.access_token, expiresAtMs: this.now() + a.expires_in * 1000 };
    return { sessionId: s.sessionId, connectionIds: [...s.connectionIds] };
  }

  /** Drops the session everywhere on this device; app data is not the SDK's to touch. */
  private async forget(): Promise<void> {
    this.jwt = null;
    this.cache.clear();
    await this.opts.store.clear();
  }

  /** POST /v1/device/token; typed errors, GrantRefused for a 400/401 OAuth error. */
  private async tokenRequest(form: Record<string, string | undefined>): Promise<DeviceTokenAnswer> {
    const r = await this.call(() =>
      this.http.POST("/v1/device/token", {
        // The form is built by hand: grant_type=authorization_code and
        // client_id are newer than the generated spec's request schema.
        body: form as never,
        bodySerializer: (b: Record<string, string | undefined>) => formEncode(b),
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        signal: this.signal(),
      }),
    );
    if (r.response.status === 200 && r.data) return r.data;
    const e = errorFields(r.error);
    const st = r.response.status;
    if (st === 400 || st === 401) {
      throw new GrantRefused(e.description ?? e.code ?? "the grant was refused", st, e.code);
    }
    throw this.statusError(r.response, e);
  }

  // ----------------------------------------------------------- connections

  /** The user's connections. */
  async listConnections(): Promise<Connection[]> {
    const r = await this.authed((bearer) =>
      this.http.GET("/v1/connections", { headers: { Authorization: "Bearer " + bearer }, signal: this.signal() }),
    );
    if (r.response.status === 200 && r.data) return r.data.connections;
    throw this.statusError(r.response, errorFields(r.error));
  }

  /**
   * A Salesforce access token valid for at least minValidity seconds, from
   * the in-memory cache or one pull (concurrent callers share it).
   */
  async getSalesforceAccessToken(connectionId: string, o: PullOptions = {}): Promise<SalesforceToken> {
    const minValidity = checkMinValidity(o.minValidity);
    const c = this.cache.get(connectionId);
    if (c && c.expiresAtMs - this.now() >= minValidity * 1000) return { ...c.token };
    const running = this.pulls.get(connectionId);
    if (running && running.minValidity >= minValidity) return running.promise;
    const promise = this.pull(connectionId, minValidity).finally(() => {
      if (this.pulls.get(connectionId)?.promise === promise) this.pulls.delete(connectionId);
    });
    this.pulls.set(connectionId, { minValidity, promise });
    return promise;
  }

  /**
   * Reports an access token Salesforce answered 401 to: one pull with its
   * SHA-256 (callers reporting the same token share it). The server
   * refreshes only if it is still the stored one.
   */
  async reportRejected(connectionId: string, rejectedAccessToken: string, o: PullOptions = {}): Promise<SalesforceToken> {
    const sha = hex(await this.crypto.sha256(utf8(rejectedAccessToken)));
    const key = connectionId + " " + sha;
    const running = this.rejections.get(key);
    if (running) return running;
    if (this.cache.get(connectionId)?.token.accessToken === rejectedAccessToken) this.cache.delete(connectionId);
    const promise = this.pull(connectionId, checkMinValidity(o.minValidity), sha).finally(() => this.rejections.delete(key));
    this.rejections.set(key, promise);
    return promise;
  }

  /**
   * Calls Salesforce with a token; on a 401 reports it and retries once
   * with the new token. A second 401 is returned as it is: no loop.
   */
  async callSalesforce(connectionId: string, send: (t: SalesforceToken) => Promise<Response>, o: PullOptions = {}): Promise<Response> {
    const t = await this.getSalesforceAccessToken(connectionId, o);
    const res = await send(t);
    if (res.status !== 401) return res;
    const fresh = await this.reportRejected(connectionId, t.accessToken, o);
    return send(fresh);
  }

  private async pull(connectionId: string, minValidity: number, rejectedSha?: string): Promise<SalesforceToken> {
    const r = await this.authed((bearer) =>
      this.http.GET("/v1/connections/{id}/access-token", {
        params: { path: { id: connectionId }, query: { min_validity: minValidity, rejected_token_sha256: rejectedSha } },
        headers: { Authorization: "Bearer " + bearer },
        signal: this.signal(),
      }),
    );
    if (r.response.status === 200 && r.data) {
      const a: AccessTokenAnswer = r.data;
      const token: SalesforceToken = {
        connectionId,
        accessToken: a.access_token,
        instanceUrl: a.instance_url,
        issuedAt: a.issued_at,
        expiresAt: a.expires_at,
      };
      const at = Date.parse(a.expires_at);
      this.cache.set(connectionId, { token, expiresAtMs: Number.isNaN(at) ? this.now() : at });
      return { ...token };
    }
    this.cache.delete(connectionId);
    throw this.statusError(r.response, errorFields(r.error), connectionId);
  }

  // ------------------------------------------------------------- plumbing

  /**
   * Runs a call with the device JWT; on 401 refreshes the session once and
   * retries once. A second 401 ends the session.
   */
  private async authed<R extends { response: Response }>(call: (bearer: string) => Promise<R>): Promise<R> {
    const bearer = await this.deviceAccessToken();
    let r = await this.callOrUnavailable(() => call(bearer));
    if (r.response.status !== 401) return r;
    const fresh = await this.refreshDevice(bearer);
    r = await this.callOrUnavailable(() => call(fresh));
    if (r.response.status === 401) {
      await this.forget();
      throw new SessionEnded("tokenwarm refused a freshly refreshed device session; connect again, app data is kept", 401, "unauthorized");
    }
    return r;
  }

  private async callOrUnavailable<R>(f: () => Promise<R>): Promise<R> {
    try {
      return await this.call(f);
    } catch (e) {
      if (e instanceof NetworkFailure) throw new Unavailable("tokenwarm could not be reached", 1);
      throw e;
    }
  }

  /** Runs a request, turning whatever fetch throws into NetworkFailure. */
  private async call<R>(f: () => Promise<R>): Promise<R> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof TokenwarmError) throw e;
      // The cause is not kept: it may quote the request.
      throw new NetworkFailure("request failed");
    }
  }

  private signal(): AbortSignal {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), this.opts.requestTimeoutMs ?? 10_000);
    // Do not keep a process (tests, servers) alive for the timer.
    (t as { unref?: () => void }).unref?.();
    return ac.signal;
  }

  private statusError(res: Response, e: ErrorFields, connectionId?: string): TokenwarmError {
    const msg = e.description ?? e.code ?? "HTTP " + res.status;
    switch (res.status) {
      case 404:
        return new NotFound(msg, 404, e.code);
      case 409:
        if (e.code === "reauth_required") return new ReauthRequired(msg, connectionId ?? "", e.reauthUrl);
        return new ConnectionRevoked(msg, 409, e.code);
      case 429:
        return new RateLimited(msg, retryAfterSeconds(res.headers.get("Retry-After"), this.now(), 1), e.code);
      case 502:
      case 503:
      case 504:
        return new Unavailable(msg, retryAfterSeconds(res.headers.get("Retry-After"), this.now(), 5), res.status, e.code);
    }
    return new UnexpectedResponse(msg, res.status, e.code);
  }
}

/** minValidity as the server takes it: whole seconds from 0 to 7200 (default 300). */
function checkMinValidity(v: number | undefined): number {
  if (v === undefined) return defaultMinValidity;
  if (!Number.isInteger(v) || v < 0 || v > 7200) throw new RangeError("tokenwarm: minValidity must be whole seconds from 0 to 7200");
  return v;
}

/** A 400/401 OAuth error from the token endpoint, judged by the caller. */
class GrantRefused extends TokenwarmError {
  override name = "GrantRefused";
}

interface ErrorFields {
  code: string | undefined;
  description: string | undefined;
  reauthUrl: string | undefined;
}

/** Reads a problem (code, detail) or an OAuth error (error, error_description) body. */
function errorFields(body: unknown): ErrorFields {
  const o = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  const s = (k: string) => (typeof o[k] === "string" ? (o[k] as string) : undefined);
  return { code: s("code") ?? s("error"), description: s("detail") ?? s("error_description"), reauthUrl: s("reauth_url") };
}
