// Runs every conformance vector (../../conformance/vectors/*.json, format in
// ../../conformance/README.md) against the SDK with a fetch that replays
// the vector's exchanges and a clock the vector moves.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { type AuthorizationRequest, MemoryTokenStore, type StoredSession, TokenwarmClient, webCryptoProvider } from "../src/index.js";
import { base64url, parseQuery, splitURL, utf8 } from "../src/encoding.js";

interface ExpectedRequest {
  method: string;
  url: string;
  query?: Record<string, string>;
  form?: Record<string, string>;
  headers?: Record<string, string>;
}
interface Exchange {
  request: ExpectedRequest;
  response?: { status: number; headers?: Record<string, string>; json?: unknown };
  networkError?: boolean;
}
interface Step {
  call: string;
  args: Record<string, unknown>;
  advance?: number;
  concurrent?: number;
  exchanges: Exchange[];
  expect: { ok?: unknown; error?: Record<string, unknown> };
}
interface Vector {
  name: string;
  description: string;
  config: { baseUrl: string; redirectUri: string; clientId?: string; deviceLabel?: string };
  clock: string;
  initialSession: StoredSession | null;
  steps: Step[];
  finalSession: StoredSession | null;
}

const vectorDir = new URL("../../../conformance/vectors/", import.meta.url);
const files = readdirSync(vectorDir).filter((f) => f.endsWith(".json")).sort();

test("the conformance vectors are there", () => {
  assert.ok(files.length >= 10, "found " + files.length + " vectors");
});

for (const file of files) {
  const v = JSON.parse(readFileSync(new URL(file, vectorDir), "utf8")) as Vector;
  test("conformance: " + v.name, async () => {
    await runVector(v);
  });
}

/** Variables bound by ${name} placeholders: the first use binds, later uses must equal. */
class Vars {
  readonly values = new Map<string, string>();

  /** Replaces bound ${name} placeholders in s. */
  fill(s: string): string {
    return s.replace(/\$\{([a-z_]+)\}/g, (m, k: string) => this.values.get(k) ?? m);
  }

  fillDeep(x: unknown): unknown {
    if (typeof x === "string") return this.fill(x);
    if (Array.isArray(x)) return x.map((e) => this.fillDeep(e));
    if (x && typeof x === "object") return Object.fromEntries(Object.entries(x).map(([k, e]) => [k, this.fillDeep(e)]));
    return x;
  }

  /** Compares an actual string with an expected one that may be a placeholder. */
  match(actual: string | undefined, expected: string, where: string): void {
    const m = /^\$\{([a-z_]+)\}$/.exec(expected);
    if (m) {
      const k = m[1]!;
      const bound = this.values.get(k);
      if (bound === undefined) {
        assert.ok(actual !== undefined && actual !== "", where + ": ${" + k + "} is empty");
        this.values.set(k, actual);
        return;
      }
      expected = bound;
    }
    assert.equal(actual, this.fill(expected), where);
  }

  /** Every expected key matches (exact key set when exact). */
  matchRecord(actual: Record<string, string>, expected: Record<string, string>, where: string, exact: boolean): void {
    if (exact) assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), where + ": parameter names");
    for (const [k, e] of Object.entries(expected)) this.match(actual[k], e, where + " " + k);
  }

  /** expected is a subset of actual (objects), strings may be placeholders. */
  matchSubset(actual: unknown, expected: unknown, where: string): void {
    if (typeof expected === "string") {
      this.match(typeof actual === "string" ? actual : JSON.stringify(actual), expected, where);
    } else if (Array.isArray(expected)) {
      assert.ok(Array.isArray(actual), where + ": not an array");
      assert.equal(actual.length, expected.length, where + ": length");
      expected.forEach((e, i) => this.matchSubset((actual as unknown[])[i], e, where + "[" + i + "]"));
    } else if (expected && typeof expected === "object") {
      assert.ok(actual && typeof actual === "object", where + ": not an object");
      for (const [k, e] of Object.entries(expected)) this.matchSubset((actual as Record<string, unknown>)[k], e, where + "." + k);
    } else {
      assert.equal(actual, expected, where);
    }
  }
}

async function runVector(v: Vector): Promise<void> {
  let nowMs = Date.parse(v.clock);
  const vars = new Vars();
  const store = new MemoryTokenStore(v.initialSession);
  let queue: Exchange[] = [];
  const mismatches: unknown[] = [];

  // The replaying fetch. A mismatch is recorded (the SDK would take a
  // thrown error for a network failure) and checked after the step.
  const replay = async (input: Request): Promise<Response> => {
    const ex = queue.shift();
    const { base, query } = splitURL(input.url);
    const where = input.method + " " + base;
    try {
      assert.ok(ex, "unexpected request " + where);
      const r = ex.request;
      assert.equal(input.method, r.method, where + ": method");
      vars.match(base, r.url, where + ": url");
      vars.matchRecord(parseQuery(query), r.query ?? {}, where + " query", true);
      if (r.form) {
        assert.match(input.headers.get("content-type") ?? "", /^application\/x-www-form-urlencoded/, where + ": content type");
        vars.matchRecord(parseQuery(await input.text()), r.form, where + " form", true);
      }
      for (const [k, e] of Object.entries(r.headers ?? {})) vars.match(input.headers.get(k) ?? undefined, e, where + " header " + k);
    } catch (e) {
      mismatches.push(e);
      throw e;
    }
    if (ex.networkError || !ex.response) throw new TypeError("network error (replayed)");
    const res = ex.response;
    return new Response(res.json === undefined ? null : JSON.stringify(vars.fillDeep(res.json)), {
      status: res.status,
      headers: res.headers ?? {},
    });
  };

  const sdk = new TokenwarmClient({
    ...v.config,
    store,
    fetch: replay,
    now: () => nowMs,
    crypto: webCryptoProvider(),
  });
  let pending: AuthorizationRequest | undefined;

  const invoke = async (s: Step): Promise<unknown> => {
    const a = vars.fillDeep(s.args) as Record<string, unknown>;
    const minValidity = a["minValidity"] as number | undefined;
    switch (s.call) {
      case "authorize": {
        const req = await sdk.authorize({ reauthUrl: a["reauthUrl"] as string | undefined });
        pending = req;
        const { base, query } = splitURL(req.url);
        const q = parseQuery(query);
        // The challenge must be S256 of the verifier, whatever the vector says.
        assert.equal(q["code_challenge"], base64url(await webCryptoProvider().sha256(utf8(req.codeVerifier))));
        assert.match(req.codeVerifier, /^[A-Za-z0-9._~-]{43,128}$/);
        vars.values.set("state", req.state);
        vars.values.set("code_verifier", req.codeVerifier);
        vars.values.set("code_challenge", q["code_challenge"]!);
        return { base, query: q };
      }
      case "completeAuthorization":
        assert.ok(pending, "completeAuthorization before authorize");
        return sdk.completeAuthorization(a["redirect"] as string, pending);
      case "getSalesforceAccessToken":
        return sdk.getSalesforceAccessToken(a["connectionId"] as string, { minValidity });
      case "callSalesforce": {
        const res = await sdk.callSalesforce(a["connectionId"] as string, (t) =>
          replay(new Request(a["url"] as string, { headers: { Authorization: "Bearer " + t.accessToken } })),
          { minValidity },
        );
        return { status: res.status };
      }
      case "listConnections":
        return sdk.listConnections();
      case "session":
        return sdk.session();
      case "signOut":
        return sdk.signOut();
    }
    throw new Error("unknown call " + s.call);
  };

  for (const [i, s] of v.steps.entries()) {
    const where = v.name + " step " + i + " (" + s.call + ")";
    nowMs += (s.advance ?? 0) * 1000;
    queue = [...s.exchanges];
    const results = await Promise.allSettled(Array.from({ length: s.concurrent ?? 1 }, () => invoke(s)));
    assert.deepEqual(mismatches, [], where + ": requests differ from the vector");
    assert.equal(queue.length, 0, where + ": " + queue.length + " expected request(s) not made");
    for (const r of results) {
      if (s.expect.error) {
        assert.equal(r.status, "rejected", where + ": expected " + String(s.expect.error["name"]) + ", got a result");
        const e = (r as PromiseRejectedResult).reason as Record<string, unknown>;
        vars.matchSubset(e, s.expect.error, where + " error");
        // A thrown error never carries a token.
        assert.doesNotMatch(String(e["message"]), /twr_|twh_|eyJ\.|00DSF\./, where + ": token in error message");
      } else {
        if (r.status === "rejected") throw r.reason;
        vars.matchSubset(r.value, s.expect.ok ?? null, where + " result");
      }
    }
  }
  assert.deepEqual(await store.load(), v.finalSession, v.name + ": final stored session");
}
