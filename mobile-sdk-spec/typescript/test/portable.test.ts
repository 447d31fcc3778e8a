// The SDK runs in React Native and browsers: nothing in src/ may need Node.
// tsconfig.json compiles src/ with no Node types (types: []), so most uses
// would not even compile; this test also catches what a cast could hide.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { test } from "node:test";

const src = new URL("../../src/", import.meta.url);

function sources(dir: URL): URL[] {
  return readdirSync(dir).flatMap((name) => {
    const u = new URL(name, dir);
    if (statSync(u).isDirectory()) return sources(new URL(name + "/", dir));
    return name.endsWith(".ts") ? [u] : [];
  });
}

test("src/ uses no Node-only API", () => {
  const files = sources(src);
  assert.ok(files.length >= 5, "found " + files.length + " source files");
  const forbidden = [/from\s+["']node:/, /from\s+["'](fs|path|crypto|http|https|os|buffer|child_process|url|util)["']/, /\brequire\(/,
    /\bprocess\./, /\bBuffer\b/, /__dirname|__filename/, /\bsetImmediate\b/];
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    for (const re of forbidden) assert.doesNotMatch(text, re, f.pathname + " uses " + re);
  }
});

test("tsconfig.json compiles src/ without Node's types", () => {
  const cfg = JSON.parse(readFileSync(new URL("../../tsconfig.json", import.meta.url), "utf8")) as { compilerOptions: { types: string[]; lib: string[] }; include: string[] };
  assert.deepEqual(cfg.compilerOptions.types, []);
  assert.deepEqual(cfg.include, ["src"]);
  assert.ok(!cfg.compilerOptions.lib.some((l) => /node/i.test(l)));
});
