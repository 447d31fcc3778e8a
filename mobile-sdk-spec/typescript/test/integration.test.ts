// The SDK against the real server: a test build of tokenwarm (-tags
// tokenwarm_testclock, built by scripts/test.d/50-typescript-sdk.sh into
// .bin/) in demo mode, whose built-in Salesforce emulator shares the
// server's clock, which POST /_test/clock moves forward (each move runs one
// warm pass before it answers).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  type AuthorizationRequest,
  MemoryTokenStore,
  ReauthRequired,
  type TokenStore,
  TokenwarmClient,
  type TokenwarmOptions,
} from "../src/index.js";


const CLIENT_ID = "sdk-test";
const REDIRECT = "com.example.sdktest:/oauth";
const DAY = 24 * 3600 * 1000;

const bin =
  process.env["TOKENWARM_TEST_SERVER_BIN"] ?? fileURLToPath(new URL("../../.bin/tokenwarm-testclock", import.meta.url));

let server: ChildProcess | undefined;
let dataDir = "";
let base = "";
let output = "";
/** Server time minus local time, from the test clock's answers. */
let offsetMs = 0;

before(async () => {
  assert.ok(
    existsSync(bin),
    `no test build of the server at ${bin}: run scripts/test.d/50-typescript-sdk.sh, or go build -tags tokenwarm_testclock -o ${bin} ./cmd/server`,
  );
  dataDir = mkdtempSync(join(tmpdir(), "tokenwarm-sdk-"));
  server = spawn(bin, ["serve"], {
    env: {
      PATH: process.env["PATH"] ?? "",
      TOKENWARM_ADDR: "127.0.0.1:0",
      TOKENWARM_DATA_DIR: dataDir,
      TOKENWARM_APP_REDIRECT_URIS: REDIRECT,
      TOKENWARM_APP_CLIENTS: CLIENT_ID + "=" + REDIRECT,
      // Warm passes run when the test moves the clock, not on their own.
      TOKENWARM_WARM_SCHEDULE: "@every 1h",
      TOKENWARM_LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout!.on("data", (b: Buffer) => (output += b.toString()));
  server.stderr!.on("data", (b: Buffer) => (output += b.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /listening on (http:\/\/\S+)/.exec(output);
    if (m) {
      base = m[1]!;
      break;
    }
    if (server.exitCode !== null || Date.now() > deadline) assert.fail("the server did not start:\n" + output);
    await new Promise((r) => setTimeout(r, 20));
  }
  // The SDK is driven with the standard parameters only.
  const meta = await fetch(base + "/.well-known/oauth-authorization-server");
  assert.equal(meta.status, 200);
  const m = (await meta.json()) as { grant_types_supported?: string[]; code_challenge_methods_supported?: string[] };
  assert.ok((m.grant_types_supported ?? []).includes("authorization_code"), "the server publishes no RFC 8414 metadata with grant_type=authorization_code");
  assert.deepEqual(m.code_challenge_methods_supported, ["S256"]);
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server!.once("exit", r));
    server.kill("SIGTERM");
    await exited;
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

function sdk(store: TokenStore, extra: Partial<TokenwarmOptions> = {}): TokenwarmClient {
  return new TokenwarmClient({
    baseUrl: base,
    redirectUri: REDIRECT,
    clientId: CLIENT_ID,
    store,
    deviceLabel: "node test",
    // The phone's clock moves with the server's.
    now: () => Date.now() + offsetMs,
    ...extra,
  });
}

/** Moves the shared clock forward; the server runs one warm pass before it answers. */
async function advance(ms: number): Promise<{ claimed: number; ok: number; dead: number; failed: number }> {
  const res = await fetch(base + "/_test/clock", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ advance: ms + "ms" }),
  });
  assert.equal(res.status, 200, "POST /_test/clock");
  const a = (await res.json()) as { now: string; warm_pass: { claimed: number; ok: number; dead: number; failed: number; error?: string } };
  assert.equal(a.warm_pass.error, undefined, "warm pass error");
  offsetMs = Date.parse(a.now) - Date.now();
  return a.warm_pass;
}

function location(res: Response, what: string): string {
  const loc = res.headers.get("location");
  assert.ok(res.status === 302 || res.status === 303, `${what}: ${res.status} without a redirect`);
  assert.ok(loc, `${what}: no Location`);
  // The app's redirect URI has a scheme of its own; the server's are relative or absolute.
  return /^[a-z][a-z0-9+.-]*:/i.test(loc) ? loc : new URL(loc, base).toString();
}

function unescapeHTML(s: string): string {
  return s.replace(/&amp;/g, "&").replace(/&#43;/g, "+").replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">");
}

/**
 * Plays the system browser: authorize URL -> the emulator's consent page ->
 * "Allow" as username -> tokenwarm's callback -> the app's redirect URI,
 * which is returned.
 */
async function browser(req: AuthorizationRequest, username: string): Promise<string> {
  const toLogin = location(await fetch(req.url, { redirect: "manual" }), "authorize");
  const page = await fetch(toLogin, { redirect: "manual" });
  const html = await page.text();
  assert.equal(page.status, 200, "consent page: " + html);
  const action = /<form method="post" action="([^"]+)"/.exec(html);
  assert.ok(action, "no consent form:\n" + html);
  const form = new URLSearchParams();
  for (const m of html.matchAll(/<input type="hidden" name="([a-z_]+)" value="([^"]*)">/g)) form.set(m[1]!, unescapeHTML(m[2]!));
  form.set("username", username);
  form.set("action", "allow");
  const decided = await fetch(unescapeHTML(action[1]!), { method: "POST", body: form, redirect: "manual" });
  const callback = location(decided, "consent");
  const toApp = await fetch(callback, { redirect: "manual" });
  const app = toApp.headers.get("location") ?? "";
  assert.ok(app.startsWith(REDIRECT + "?"), `callback: ${toApp.status} ${app} ${await toApp.text()}`);
  return app;
}

async function connect(store: TokenStore, username: string): Promise<{ client: TokenwarmClient; connectionId: string }> {
  const client = sdk(store);
  const req = await client.authorize();
  const s = await client.completeAuthorization(await browser(req, username), req);
  assert.equal(s.connectionIds.length, 1);
  return { client, connectionId: s.connectionIds[0]! };
}

/** GET the emulator's REST API root with a Salesforce access token. */
async function salesforceAPI(instanceUrl: string, token: string): Promise<Response> {
  return fetch(instanceUrl.replace(/\/+$/, "") + "/services/data/v62.0/", { headers: { Authorization: "Bearer " + token } });
}

test("connect, list, pull, and call Salesforce with the token", async () => {
  const store = new MemoryTokenStore();
  const { client, connectionId } = await connect(store, "ana@example.com");
  assert.ok((await store.load())?.refreshToken.startsWith("twr_"), "the device refresh token is stored");
  const conns = await client.listConnections();
  assert.deepEqual(
    conns.map((c) => [c.id, c.status]),
    [[connectionId, "active"]],
  );
  const t = await client.getSalesforceAccessToken(connectionId, { minValidity: 600 });
  const res = await salesforceAPI(t.instanceUrl, t.accessToken);
  assert.equal(res.status, 200, "the emulator's API refused the token");
  // Cached: the same token without a call.
  assert.equal((await client.getSalesforceAccessToken(connectionId)).accessToken, t.accessToken);
});

test("a token Salesforce rejects is reported once and replaced", async () => {
  const { client, connectionId } = await connect(new MemoryTokenStore(), "ben@example.com");
  const t = await client.getSalesforceAccessToken(connectionId);
  // Salesforce ends the session (an admin, a password change...).
  const revoked = await fetch(t.instanceUrl + "/services/oauth2/revoke", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: "token=" + encodeURIComponent(t.accessToken),
  });
  assert.equal(revoked.status, 200, "emulator revoke");
  const used: string[] = [];
  const res = await client.callSalesforce(connectionId, async (tok) => {
    used.push(tok.accessToken);
    return salesforceAPI(tok.instanceUrl, tok.accessToken);
  });
  assert.equal(res.status, 200);
  assert.equal(used.length, 2);
  assert.equal(used[0], t.accessToken);
  assert.notEqual(used[1], t.accessToken, "the rejected token was handed out again");
});

test("month offline: the warmer keeps the grant alive for 45 days", async () => {
  const store = new MemoryTokenStore();
  const { client, connectionId } = await connect(store, "carla@example.com");
  const first = await client.getSalesforceAccessToken(connectionId);
  assert.equal((await salesforceAPI(first.instanceUrl, first.accessToken)).status, 200);
  // The app is gone for 45 days; the server and the emulator live through
  // them a day at a time, with a warm pass each day as in production.
  let warmed = 0;
  for (let day = 0; day < 45; day++) {
    const p = await advance(DAY);
    assert.equal(p.failed + p.dead, 0, `day ${day}: a warm refresh failed`);
    warmed += p.ok;
  }
  // 45 days at a 72 h ± 15 % interval: about 15 refreshes of this connection.
  assert.ok(warmed >= 12, `only ${warmed} warm refreshes (of every connection) in 45 days`);
  // The app comes back (a fresh process: only the secure store survived).
  const back = sdk(store);
  const t = await back.getSalesforceAccessToken(connectionId);
  assert.notEqual(t.accessToken, first.accessToken);
  assert.ok(Date.parse(t.expiresAt) > Date.now() + offsetMs, "the token is already expired by the server's clock");
  const res = await salesforceAPI(t.instanceUrl, t.accessToken);
  assert.equal(res.status, 200, "the emulator refused the token pulled after 45 days");
  assert.equal((await back.listConnections())[0]?.status, "active");
});

test("45 idle days at once: Salesforce's idle TTL kills the grant, 409 re-auth keeps the data", async () => {
  const store = new MemoryTokenStore();
  const { client, connectionId } = await connect(store, "dan@example.com");
  await client.getSalesforceAccessToken(connectionId);
  // No pass ran during the 45 days: the one after the jump is too late.
  const p = await advance(45 * DAY);
  assert.ok(p.dead >= 1, "the warmer did not find the idle-expired grant dead: " + JSON.stringify(p));
  const back = sdk(store);
  const err = await back.getSalesforceAccessToken(connectionId).then(
    () => assert.fail("a token was pulled for a grant idle for 45 days"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ReauthRequired, "want ReauthRequired, got " + String(err));
  assert.equal(err.connectionId, connectionId);
  assert.ok(err.reauthUrl, "no reauth_url");
  assert.ok(await store.load(), "the device session was dropped on 409");
  // Re-authorize through the link: same connection, tokens again.
  const req = await back.authorize({ reauthUrl: err.reauthUrl });
  const s = await back.completeAuthorization(await browser(req, "dan@example.com"), req);
  assert.deepEqual(s.connectionIds, [connectionId]);
  const t = await back.getSalesforceAccessToken(connectionId);
  assert.equal((await salesforceAPI(t.instanceUrl, t.accessToken)).status, 200);
});

test(
  "a lost device refresh answer is retried inside the reuse interval",
  {},
  async () => {
    const store = new MemoryTokenStore();
    const { connectionId } = await connect(store, "eve@example.com");
    const before = (await store.load())!.refreshToken;
    let dropped = 0;
    // The network loses the first refresh answer after the server rotated.
    const lossy = async (input: Request): Promise<Response> => {
      const res = await fetch(input);
      if (dropped === 0 && input.url.endsWith("/v1/device/token")) {
        dropped++;
        throw new TypeError("connection reset (simulated)");
      }
      return res;
    };
    const app = sdk(store, { fetch: lossy });
    const t = await app.getSalesforceAccessToken(connectionId);
    assert.equal(dropped, 1);
    assert.notEqual((await store.load())!.refreshToken, before);
    assert.equal((await salesforceAPI(t.instanceUrl, t.accessToken)).status, 200);
  },
);
