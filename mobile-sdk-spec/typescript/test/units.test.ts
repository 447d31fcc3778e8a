// The hand-written encodings and helpers, against Node's own implementations.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";

import { base64url, formEncode, hex, parseQuery, splitURL, utf8 } from "../src/encoding.js";
import { retryAfterSeconds } from "../src/errors.js";
import { MemoryTokenStore, TokenwarmClient, webCryptoProvider } from "../src/index.js";

test("base64url, hex and utf8 agree with Node's", () => {
  for (let n = 0; n < 40; n++) {
    const b = new Uint8Array(randomBytes(n));
    assert.equal(base64url(b), Buffer.from(b).toString("base64url"));
    assert.equal(hex(b), Buffer.from(b).toString("hex"));
  }
  for (const s of ["", "abc", "é", "日本", "😀 x", "a+b=c&d"]) assert.deepEqual(Buffer.from(utf8(s)), Buffer.from(s, "utf8"));
});

test("form encoding round-trips and leaves undefined out", () => {
  const enc = formEncode({ a: "x y", b: "é&=+/", c: undefined, d: "" });
  assert.equal(enc, "a=x+y&b=%C3%A9%26%3D%2B%2F&d=");
  assert.deepEqual(parseQuery(enc), { a: "x y", b: "é&=+/", d: "" });
  assert.deepEqual(new URLSearchParams(enc).get("b"), "é&=+/");
  assert.deepEqual(parseQuery("?x=1&x=2&bad=%E0%A4%A"), { x: "1", bad: "%E0%A4%A" });
  assert.deepEqual(splitURL("com.app:/cb?code=1&state=s#frag"), { base: "com.app:/cb", query: "code=1&state=s" });
});

test("Retry-After in seconds or as a date, at least 1, with a fallback", () => {
  const now = Date.parse("2026-12-01T00:00:00Z");
  assert.equal(retryAfterSeconds("7", now, 5), 7);
  assert.equal(retryAfterSeconds("0", now, 5), 1);
  assert.equal(retryAfterSeconds("Tue, 01 Dec 2026 00:00:30 GMT", now, 5), 30);
  assert.equal(retryAfterSeconds(null, now, 5), 5);
  assert.equal(retryAfterSeconds("soon", now, 5), 5);
});

test("the Web Crypto provider hashes like Node and refuses a platform without crypto.subtle", async () => {
  const p = webCryptoProvider();
  assert.equal(hex(await p.sha256(utf8("abc"))), createHash("sha256").update("abc").digest("hex"));
  const noSubtle = webCryptoProvider({ getRandomValues: <T extends ArrayBufferView | null>(a: T) => a });
  await assert.rejects(noSubtle.sha256(utf8("x")), /crypto\.subtle/);
  assert.throws(() => webCryptoProvider({} as never), /CryptoProvider/);
});

test("authorize uses the injected crypto provider and makes a fresh pair each time", async () => {
  let draws = 0;
  const real = webCryptoProvider();
  const client = new TokenwarmClient({
    baseUrl: "https://tw.example/",
    redirectUri: "com.example.app:/oauth",
    store: new MemoryTokenStore(),
    fetch: () => Promise.reject(new Error("no request expected")),
    crypto: { getRandomValues: (b) => (draws++, real.getRandomValues(b)), sha256: (d) => real.sha256(d) },
  });
  const a = await client.authorize({ loginHost: "sandbox" });
  const b = await client.authorize();
  assert.equal(draws, 4);
  assert.notEqual(a.state, b.state);
  assert.notEqual(a.codeVerifier, b.codeVerifier);
  assert.ok(a.url.startsWith("https://tw.example/v1/oauth/authorize?"));
  assert.equal(parseQuery(splitURL(a.url).query)["login_host"], "sandbox");
  assert.equal(parseQuery(splitURL(a.url).query)["client_id"], undefined, "no client_id configured, none sent");
});

test("minValidity outside 0..7200 whole seconds is refused before any request", async () => {
  const client = new TokenwarmClient({
    baseUrl: "https://tw.example",
    redirectUri: "com.example.app:/oauth",
    store: new MemoryTokenStore(),
    fetch: () => Promise.reject(new Error("no request expected")),
  });
  for (const v of [-1, 7201, 1.5, Number.NaN]) {
    await assert.rejects(client.getSalesforceAccessToken("c", { minValidity: v }), RangeError);
    await assert.rejects(client.reportRejected("c", "tok", { minValidity: v }), RangeError);
  }
});
